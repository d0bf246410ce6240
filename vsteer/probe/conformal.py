"""Abstention with a stated risk: `hallucination.max_error`.

The probe artifact stores a calibration set: probe scores of questions the probe was
not fit on, and whether the model answered each wrongly. For a target error rate a,
the server abstains when score >= t(a), with

Semantics (split-conformal style, finite-sample corrected):
    answered(t) = {i : s_i < t}          k(t) = #wrong in answered(t), n(t) = #answered(t)
    bound(t)    = (k(t) + 1) / (n(t) + 1)
    t(a)        = the largest t in {unique s_i} ∪ {+inf} with bound(t) <= a
    no such t   -> the target is not attainable with this calibration set (a 400)
The +1 is the conformal correction (one unseen question counted as wrong). Under
exchangeability of calibration and served questions this keeps the error among
answered questions near a; on a new kind of question it is an estimate, which is why
`vsteer eval probe --loso` reports the achieved error on sources the probe never saw.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class RiskThreshold:
    threshold: float  # abstain when score >= threshold (+inf: never abstain)
    bound: float  # bound(t) on the calibration set
    coverage: float  # share of calibration questions answered
    calibration_size: int


class UnattainableRisk(ValueError):
    def __init__(self, max_error: float, best: float) -> None:
        super().__init__(f"max_error {max_error:g} is below what this probe's calibration set "
                         f"supports (lowest bound {best:.3f})")
        self.best = best


def risk_threshold(scores: np.ndarray, wrong: np.ndarray, max_error: float) -> RiskThreshold:
    s = np.asarray(scores, np.float64)
    w = np.asarray(wrong, bool)
    if len(s) == 0 or len(s) != len(w):
        raise ValueError("calibration scores and labels must be non-empty and aligned")
    if not 0.0 < max_error < 1.0:
        raise ValueError("max_error must be in (0, 1)")
    order = np.argsort(s, kind="mergesort")
    s, w = s[order], w[order]
    cands = np.append(np.unique(s), np.inf)  # ascending
    n = np.searchsorted(s, cands, side="left")  # answered: s < t
    k = np.concatenate([[0], np.cumsum(w)])[n]
    bound = (k + 1) / (n + 1)
    ok = np.nonzero(bound <= max_error)[0]
    if not len(ok):
        raise UnattainableRisk(max_error, float(bound.min()))
    i = int(ok[-1])
    return RiskThreshold(float(cands[i]), float(bound[i]), float(n[i] / len(s)), len(s))


def achieved(scores: np.ndarray, wrong: np.ndarray, threshold: float
             ) -> tuple[float | None, float]:
    """(error rate among answered or None, coverage) at `threshold` on new questions."""
    s, w = np.asarray(scores, np.float64), np.asarray(wrong, bool)
    answered = s < threshold
    err = float(w[answered].mean()) if answered.any() else None
    return err, float(answered.mean())
