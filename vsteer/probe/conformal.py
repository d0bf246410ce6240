"""Abstention with a stated risk: `hallucination.max_error`.

The probe artifact stores a calibration set: probe scores of questions the probe was
not fit on, and whether the model answered each wrongly. For a target error rate a,
the server abstains when score >= t(a), chosen so that, with probability >= 1 - DELTA
over the calibration draw, the error rate among answered questions is <= a (a PAC
bound in the manner of selective classification's SGR; exchangeable questions assumed).

Semantics:
    coverages c_i = i / GRID, i = 1..GRID        (the candidate shares answered)
    answered(c)   = the ceil(c * n) lowest-scored calibration questions; t(c) = the
                    next score up (+inf when all are answered); k(c) = #wrong in them
    ucb(c)        = Clopper-Pearson upper bound on the error rate at confidence
                    1 - DELTA / GRID (Bonferroni over the grid): the p with
                    P(Binomial(m, p) <= k) = DELTA / GRID, m = #answered
    t(a)          = t(c) for the largest c with ucb(c) <= a
    no such c     -> the target is not attainable with this calibration set (a 400)
A first version took the largest threshold whose (k + 1) / (n + 1) met the target;
scanning every threshold made that optimistic (44% error at a 20% target on held-out
geography), so the bound is now simultaneous over a fixed grid. On a new kind of
question exchangeability fails, which is why `vsteer eval probe --loso` reports the
achieved error on sources the probe never saw.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

GRID = 20
DELTA = 0.1


@dataclass(frozen=True)
class RiskThreshold:
    threshold: float  # abstain when score >= threshold (+inf: never abstain)
    bound: float  # ucb on the calibration set at the chosen coverage
    coverage: float  # share of calibration questions answered
    calibration_size: int


class UnattainableRisk(ValueError):
    def __init__(self, max_error: float, best: float) -> None:
        super().__init__(f"max_error {max_error:g} is below what this probe's calibration set "
                         f"supports (lowest bound {best:.3f})")
        self.best = best


def binomial_cdf(k: int, m: int, p: float) -> float:
    """P(Binomial(m, p) <= k)."""
    if p <= 0.0:
        return 1.0
    if p >= 1.0:
        return 1.0 if k >= m else 0.0
    i = np.arange(k + 1)
    logc = (math.lgamma(m + 1) - np.array([math.lgamma(j + 1) for j in i])
            - np.array([math.lgamma(m - j + 1) for j in i]))
    return float(np.exp(logc + i * math.log(p) + (m - i) * math.log1p(-p)).sum())


def upper_bound(k: int, m: int, delta: float) -> float:
    """Clopper-Pearson upper confidence bound on p from k errors in m, level 1 - delta."""
    if k >= m:
        return 1.0
    lo, hi = k / m, 1.0
    for _ in range(60):  # bisection: binomial_cdf falls as p grows
        mid = (lo + hi) / 2
        if binomial_cdf(k, m, mid) > delta:
            lo = mid
        else:
            hi = mid
    return hi


def risk_threshold(scores: np.ndarray, wrong: np.ndarray, max_error: float,
                   delta: float = DELTA, grid: int = GRID) -> RiskThreshold:
    s = np.asarray(scores, np.float64)
    w = np.asarray(wrong, bool)
    if len(s) == 0 or len(s) != len(w):
        raise ValueError("calibration scores and labels must be non-empty and aligned")
    if not 0.0 < max_error < 1.0:
        raise ValueError("max_error must be in (0, 1)")
    order = np.argsort(s, kind="mergesort")
    s, w = s[order], w[order]
    n = len(s)
    best, chosen = 1.0, None
    for i in range(1, grid + 1):
        m = math.ceil(i * n / grid)
        t = float(s[m]) if m < n else math.inf
        m = int(np.searchsorted(s, t, side="left"))  # ties at t are not answered
        if m == 0:
            continue
        ucb = upper_bound(int(w[:m].sum()), m, delta / grid)
        best = min(best, ucb)
        if ucb <= max_error:
            chosen = RiskThreshold(t, ucb, m / n, n)
    if chosen is None:
        raise UnattainableRisk(max_error, best)
    return chosen


def achieved(scores: np.ndarray, wrong: np.ndarray, threshold: float
             ) -> tuple[float | None, float]:
    """(error rate among answered or None, coverage) at `threshold` on new questions."""
    s, w = np.asarray(scores, np.float64), np.asarray(wrong, bool)
    answered = s < threshold
    err = float(w[answered].mean()) if answered.any() else None
    return err, float(answered.mean())
