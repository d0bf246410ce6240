"""`hallucination.max_error`'s threshold rule (vsteer/probe/conformal.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from vsteer.probe.conformal import (
    GRID,
    UnattainableRisk,
    achieved,
    binomial_cdf,
    risk_threshold,
    upper_bound,
)


def test_binomial_cdf_and_clopper_pearson_bound():
    assert binomial_cdf(0, 3, 0.5) == pytest.approx(1 / 8)
    assert binomial_cdf(2, 4, 0.25) == pytest.approx(
        sum(math.comb(4, i) * 0.25 ** i * 0.75 ** (4 - i) for i in range(3)))
    u = upper_bound(3, 40, 0.05)
    assert binomial_cdf(3, 40, u) == pytest.approx(0.05, abs=1e-6)
    assert 3 / 40 < u < upper_bound(3, 20, 0.05)  # fewer samples, wider bound
    assert upper_bound(0, 10, 0.05) == pytest.approx(1 - 0.05 ** (1 / 10), abs=1e-6)
    assert upper_bound(5, 5, 0.05) == 1.0


@pytest.mark.parametrize("seed", range(4))
def test_threshold_is_the_largest_grid_coverage_whose_bound_meets_the_target(seed):
    rng = np.random.default_rng(seed)
    s = np.round(rng.uniform(size=400), 3)  # ties on purpose
    w = rng.uniform(size=400) < s  # higher score, more often wrong
    t = risk_threshold(s, w, 0.3)
    ans = s < t.threshold
    assert t.coverage == pytest.approx(ans.mean())
    assert t.bound == pytest.approx(upper_bound(int(w[ans].sum()), int(ans.sum()), 0.1 / GRID))
    assert t.bound <= 0.3
    higher = s[s >= t.threshold]  # the next grid point up does not meet it
    if len(higher) > 400 // GRID:
        nxt = np.sort(s)[math.ceil((t.coverage + 1 / GRID) * 400) - 1]
        more = s <= nxt
        assert upper_bound(int(w[more].sum()), int(more.sum()), 0.1 / GRID) > 0.3 or \
            (s < nxt).mean() <= t.coverage


def test_unattainable_target_names_the_lowest_bound():
    s = np.linspace(0, 1, 20)
    w = np.ones(20, bool)  # always wrong
    with pytest.raises(UnattainableRisk, match="lowest bound") as e:
        risk_threshold(s, w, 0.2)
    assert e.value.best == pytest.approx(1.0)


def test_never_abstains_when_the_whole_set_meets_the_target():
    s = np.linspace(0, 1, 500)
    w = np.zeros(500, bool)
    assert risk_threshold(s, w, 0.1).threshold == np.inf


def test_on_exchangeable_data_the_error_among_answered_stays_under_the_target():
    """Calibrate on one draw, serve another from the same distribution: the error
    among answered questions is <= the target in at least 1 - DELTA of the draws, and
    the rule is not so cautious that it answers nothing."""
    rng = np.random.default_rng(0)
    over, errs, covs = 0, [], []
    for _ in range(60):
        s_cal, s_new = rng.uniform(size=1000), rng.uniform(size=4000)
        w_cal, w_new = rng.uniform(size=1000) < s_cal, rng.uniform(size=4000) < s_new
        t = risk_threshold(s_cal, w_cal, 0.2)
        err, cov = achieved(s_new, w_new, t.threshold)
        assert err is not None
        over += err > 0.2
        errs.append(err)
        covs.append(cov)
    assert over <= 6
    assert 0.1 < np.mean(errs) <= 0.2 and np.mean(covs) > 0.2


def test_bad_inputs_are_rejected():
    with pytest.raises(ValueError):
        risk_threshold(np.array([]), np.array([]), 0.2)
    with pytest.raises(ValueError):
        risk_threshold(np.array([0.1]), np.array([True]), 1.0)
