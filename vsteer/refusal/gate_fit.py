"""The learned controller's gate threshold, chosen like the guard's: for an operator's
false-positive target on harmless prompts of several sources (guard_fit.threshold_for).
Training fixed it at 0.5, which did not transfer (issue 16).

Semantics:
    p(x)      = the controller's gate on the last prompt token's stream at its input layer
    threshold = threshold_for(p over the calibration harmless prompts, their sources,
                              max_fpr, rule)
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from vsteer.artifacts import RefusalController
from vsteer.refusal.guard_fit import threshold_for


def gate_scores(ctrl: RefusalController, x: np.ndarray) -> np.ndarray:
    """x [N, H] (last prompt token at the input layer) -> p [N]."""
    return np.array([ctrl.evaluate(v)[0] for v in x])


def calibrate_gate(ctrl: RefusalController, harmless: np.ndarray, sources: np.ndarray,
                   max_fpr: float, rule: str) -> RefusalController:
    """harmless [N, H]: last-token streams at the input layer of harmless prompts."""
    p = gate_scores(ctrl, harmless)
    t = threshold_for(p, sources, max_fpr, rule)
    gate = {"max_fpr": max_fpr, "fpr_rule": rule, "harmless": int(len(p)),
            "calibrated_on": sorted(set(sources.tolist())), "trained_threshold": ctrl.threshold}
    return replace(ctrl, threshold=t, scores={**ctrl.scores, "gate_calibration": gate})
