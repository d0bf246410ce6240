"""Resolve `control.hallucination` into the probe the worker runs in prefill. Every
failure is an APIError raised before the engine."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from vsteer.artifacts import ArtifactStore, HallucinationProbe, ModelFingerprint
from vsteer.probe.conformal import RiskThreshold, UnattainableRisk, risk_threshold
from vsteer.server.auth import Principal
from vsteer.server.control_protocol import HALLUCINATION_ACTIONS, HallucinationControl
from vsteer.server.errors import APIError
from vsteer.server.refusal_resolver import check_scale, load_artifact
from vsteer.wire import WireProbe, slot_key

P = "control.hallucination"
NEVER = math.nextafter(1.0, 2.0)  # a threshold no probe score (<= 1) reaches


@dataclass
class ResolvedProbe:
    wire: WireProbe
    applied: dict[str, Any]


def resolve_hallucination(h: HallucinationControl, rid: str, store: ArtifactStore,
                          fp: ModelFingerprint, who: Principal, max_abs_scale: float
                          ) -> ResolvedProbe:
    HALLUCINATION_ACTIONS.check(h.model_fields_set, h.action, P)
    stored = load_artifact(store, fp, "probe", h.probe, f"{P}.probe", who)
    p = stored.value
    if h.per_token and not p.has_token_probe:
        raise APIError(400, f"probe {h.probe!r} has no per-token probe (retrain it with "
                       "`vsteer probe train`)", param=f"{P}.per_token",
                       code="field_not_applicable")
    scale = check_scale(1.0 if h.scale is None else h.scale, max_abs_scale, f"{P}.scale")
    threshold = p.threshold if h.threshold is None else h.threshold
    risk = _risk_threshold(h, p) if h.max_error is not None else None
    if risk is not None:
        threshold = min(risk.threshold, NEVER)  # +inf: the whole set meets max_error
    source = target = ""
    layers: list[int] = []
    if h.action == "mitigate":
        layers = list(p.mitigate_layers)
        if not layers:
            raise APIError(400, f"probe {h.probe!r} has no layer after its probe layer to "
                           "mitigate at", param=f"{P}.action", code="field_not_applicable")
        source = slot_key(f"{h.probe}#truth", stored.sha256, layers)
        target = f"probe:{rid}"
    wire = WireProbe(path=str(stored.path), sha256=stored.sha256, action=h.action,
                     threshold=threshold, per_token=h.per_token, source_key=source,
                     target_key=target, mitigate_layers=layers, scale=scale)
    applied: dict[str, Any] = {"probe": h.probe, "action": h.action, "threshold": threshold,
                               "per_token": h.per_token, "layer": p.layer,
                               "pooling": p.pooling}
    if h.action == "mitigate":
        applied["scale"] = scale
    if risk is not None:
        applied["max_error"] = h.max_error
        applied["risk_calibration"] = {"questions": risk.calibration_size,
                                       "bound": risk.bound, "coverage": risk.coverage}
    return ResolvedProbe(wire, applied)


def _risk_threshold(h: HallucinationControl, p: HallucinationProbe) -> RiskThreshold:
    """The threshold for `max_error` from the probe's risk calibration."""
    param = f"{P}.max_error"
    if h.threshold is not None:
        raise APIError(400, f"give {P}.threshold or {P}.max_error, not both", param=param,
                       code="conflicting_fields")
    if not p.has_risk_calibration:
        raise APIError(400, f"probe {h.probe!r} has no risk calibration (retrain it with "
                       "`vsteer probe train`)", param=param, code="probe_not_calibrated")
    assert p.conformal_scores is not None and p.conformal_wrong is not None
    try:
        return risk_threshold(p.conformal_scores, p.conformal_wrong, float(h.max_error or 0))
    except UnattainableRisk as e:
        raise APIError(400, f"probe {h.probe!r}: {e}", param=param,
                       code="max_error_unattainable") from None
