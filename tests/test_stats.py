"""Bootstrap confidence intervals (vsteer/stats.py)."""

from __future__ import annotations

import numpy as np
import pytest

from vsteer.stats import bootstrap_ci, paired_delta_ci, rate_ci


def test_rate_ci_brackets_the_rate_and_shrinks_with_more_prompts():
    rng = np.random.default_rng(0)
    small, big = rng.uniform(size=40) < 0.3, rng.uniform(size=4000) < 0.3
    lo, hi = rate_ci(small)
    assert lo <= small.mean() <= hi
    blo, bhi = rate_ci(big)
    assert bhi - blo < (hi - lo) / 4
    assert blo < 0.3 < bhi


def test_paired_delta_keeps_the_pairing():
    """The same prompts before and after: a constant +1 on half of them is a delta of
    exactly 0.5 in every resample only if rows are resampled together."""
    before = np.zeros(100)
    after = np.r_[np.ones(50), np.zeros(50)]
    lo, hi = paired_delta_ci(after, before)
    assert lo <= 0.5 <= hi and hi - lo < 0.25
    same = paired_delta_ci(after, after)
    assert same == (0.0, 0.0)


def test_bootstrap_is_seeded_and_rejects_misaligned_columns():
    x = np.arange(30.0)
    assert bootstrap_ci(np.mean, x) == bootstrap_ci(np.mean, x)
    with pytest.raises(ValueError):
        bootstrap_ci(lambda a, b: 0.0, np.ones(3), np.ones(4))
