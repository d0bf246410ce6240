"""`hallucination.max_error`'s threshold rule (vsteer/probe/conformal.py)."""

from __future__ import annotations

import numpy as np
import pytest

from vsteer.probe.conformal import UnattainableRisk, achieved, risk_threshold


def _brute(scores, wrong, a):
    best = None
    for t in sorted(set(scores.tolist())) + [np.inf]:
        ans = scores < t
        if (wrong[ans].sum() + 1) / (ans.sum() + 1) <= a:
            best = t
    return best


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("a", [0.1, 0.2, 0.35])
def test_threshold_is_the_largest_whose_corrected_bound_meets_the_target(seed, a):
    rng = np.random.default_rng(seed)
    s = np.round(rng.uniform(size=120), 2)  # ties on purpose
    w = rng.uniform(size=120) < s  # higher score, more often wrong
    try:
        t = risk_threshold(s, w, a)
    except UnattainableRisk:
        assert _brute(s, w, a) is None
        return
    assert t.threshold == _brute(s, w, a)
    ans = s < t.threshold
    assert t.bound == pytest.approx((w[ans].sum() + 1) / (ans.sum() + 1))
    assert t.bound <= a and t.coverage == pytest.approx(ans.mean())


def test_unattainable_target_names_the_lowest_bound():
    s = np.linspace(0, 1, 20)
    w = np.ones(20, bool)  # always wrong
    with pytest.raises(UnattainableRisk, match="lowest bound") as e:
        risk_threshold(s, w, 0.2)
    assert e.value.best == pytest.approx(1.0)


def test_never_abstains_when_the_whole_set_meets_the_target():
    s = np.linspace(0, 1, 50)
    w = np.zeros(50, bool)
    assert risk_threshold(s, w, 0.1).threshold == np.inf


def test_on_exchangeable_data_the_achieved_error_is_near_the_target():
    """Calibrate on one draw, serve another from the same distribution: the error
    among answered questions stays within 0.05 of the target (averaged over draws)."""
    rng = np.random.default_rng(0)
    errs = []
    for _ in range(40):
        s_cal, s_new = rng.uniform(size=400), rng.uniform(size=2000)
        w_cal, w_new = rng.uniform(size=400) < s_cal, rng.uniform(size=2000) < s_new
        t = risk_threshold(s_cal, w_cal, 0.2)
        err, cov = achieved(s_new, w_new, t.threshold)
        assert err is not None and 0 < cov < 1
        errs.append(err)
    assert abs(np.mean(errs) - 0.2) < 0.05
    assert np.mean(errs) <= 0.2 + 0.01  # the +1 correction errs on the safe side


def test_bad_inputs_are_rejected():
    with pytest.raises(ValueError):
        risk_threshold(np.array([]), np.array([]), 0.2)
    with pytest.raises(ValueError):
        risk_threshold(np.array([0.1]), np.array([True]), 1.0)
