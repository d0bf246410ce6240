"""Resolve `control.early_exit` into per-layer thresholds for the worker. Every failure
is an APIError raised before the engine."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from vsteer.artifacts import ArtifactError, ArtifactStore, ModelFingerprint
from vsteer.server.auth import Principal
from vsteer.server.control_protocol import EXIT_MODES, EarlyExitControl
from vsteer.server.errors import APIError
from vsteer.server.refusal_resolver import load_artifact
from vsteer.wire import WireExit

P = "control.early_exit"


@dataclass
class ResolvedExit:
    wire: WireExit | None  # None: mode off
    applied: dict[str, Any]


def resolve_early_exit(e: EarlyExitControl, store: ArtifactStore, fp: ModelFingerprint,
                       who: Principal, layer_skip: bool) -> ResolvedExit:
    EXIT_MODES.check(e.model_fields_set, e.mode, P)
    if e.mode == "off":
        return ResolvedExit(None, {"mode": "off"})
    if e.predictor is None:
        raise APIError(400, f"{P}.predictor is required (an exit predictor artifact from "
                       "`vsteer exit train`)", param=f"{P}.predictor", code="missing_field")
    if e.threshold is not None and e.target_agreement is not None:
        raise APIError(400, f"give {P}.threshold or {P}.target_agreement, not both",
                       param=f"{P}.threshold", code="conflicting_fields")
    if e.mode == "exit" and not layer_skip:
        raise APIError(400, f"{P}.mode 'exit' skips layers, which needs the server started "
                       "with --enforce-eager (and a model whose K/V vsteer can fill); "
                       "'observe' works in every mode", param=f"{P}.mode", code="not_supported")
    stored = load_artifact(store, fp, "exit", e.predictor, f"{P}.predictor", who)
    pred = stored.value
    applied: dict[str, Any] = {"mode": e.mode, "predictor": e.predictor,
                               "layers": list(pred.layers)}
    if e.threshold is not None:
        thresholds = [e.threshold] * len(pred.layers)
        applied["threshold"] = e.threshold
    else:
        target = pred.default_target if e.target_agreement is None else e.target_agreement
        try:
            thresholds = pred.thresholds_for(target)
        except ArtifactError as err:
            raise APIError(400, f"{P}.target_agreement: {err}", param=f"{P}.target_agreement",
                           code="target_agreement_unattainable") from None
        applied["target_agreement"] = target
    wire = WireExit(path=str(stored.path), sha256=stored.sha256, mode=e.mode,
                    thresholds=thresholds)
    return ResolvedExit(wire, applied)
