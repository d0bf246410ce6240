"""Confidence intervals for evaluation figures: the percentile bootstrap over prompts.

Semantics:
    ci(stat, *cols) = (2.5%, 97.5%) percentiles of stat(*[c[idx] for c in cols]) over
                      N_BOOT resamples idx of range(n) drawn with replacement (seeded);
                      columns are resampled together, so a paired difference (the same
                      prompts with and without a control) keeps its pairing.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

N_BOOT = 2000


def bootstrap_ci(stat: Callable[..., float], *cols: np.ndarray, n_boot: int = N_BOOT,
                 seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    arrays = [np.asarray(c) for c in cols]
    n = len(arrays[0])
    if n == 0 or any(len(a) != n for a in arrays):
        raise ValueError("bootstrap needs equal-length, non-empty columns")
    rng = np.random.default_rng(seed)
    vals = np.empty(n_boot)
    for b in range(n_boot):
        idx = rng.integers(0, n, n)
        vals[b] = stat(*[a[idx] for a in arrays])
    vals = vals[np.isfinite(vals)]
    if not len(vals):
        return float("nan"), float("nan")
    lo = (1 - level) / 2
    return float(np.quantile(vals, lo)), float(np.quantile(vals, 1 - lo))


def rate_ci(flags: np.ndarray) -> tuple[float, float]:
    return bootstrap_ci(lambda f: float(np.mean(f)), np.asarray(flags, float))


def paired_delta_ci(after: np.ndarray, before: np.ndarray) -> tuple[float, float]:
    """CI of mean(after) - mean(before) over the same prompts."""
    return bootstrap_ci(lambda a, b: float(np.mean(a) - np.mean(b)),
                        np.asarray(after, float), np.asarray(before, float))
