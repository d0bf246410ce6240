"""`refusal`: refusal controls on the Control API (plugins/api.py).

    "control": {"refusal": {"mode": "guard" | "force" | "ablate" | "controller" | "off",
                            "direction": "refusal", "controller": NAME,
                            "scale": s, "threshold": t, "layers": [...]}}

    force:      add s * refusal[l] at the given layers, every token (shared token plan)
    ablate:     remove the refusal direction's component at every layer (operator-only,
                or a tenant policy's allow_ablate)
    guard:      decide once, inside prefill, at the calibrated condition layer; when it
                fires, force from then on (plugins/refusal_worker.py, a private slot)
    controller: the same with a learned controller's score and per-layer weights

The response's `control.refusal` says what was applied and, for guard and controller,
the worker's decision: {mode, triggered, score, threshold, artifact, ...}.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import msgspec
from pydantic import BaseModel, ConfigDict, Field

from vsteer.plugins.api import Control, Resolution, ResolveContext, WorkerContext
from vsteer.server.mode_schema import ModeFields, f
from vsteer.wire import WireDecide, slot_key, steer_entry


class RefusalControl(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    mode: Literal["off", "guard", "force", "ablate", "controller"] = "guard"
    direction: str | None = Field(default=None, min_length=1, max_length=128)
    controller: str | None = Field(default=None, min_length=1, max_length=128)
    scale: float | None = None  # force / guard coefficient (default 1)
    threshold: float | None = None  # guard / controller (default: the calibrated one)
    layers: list[int] | None = Field(default=None, max_length=512)  # force only


# The fields each mode reads (server/mode_schema.py): any other is a 400, and the OpenAPI
# spec shows one closed variant per mode.
REFUSAL_MODES = ModeFields("mode", "guard", {
    "off": f(), "guard": f("direction", "scale", "threshold"),
    "force": f("direction", "scale", "layers"), "ablate": f("direction"),
    "controller": f("controller", "direction", "threshold")})


class Refusal(Control):
    name = "refusal"
    schema = RefusalControl
    modes = REFUSAL_MODES

    def resolve(self, r: RefusalControl, ctx: ResolveContext) -> Resolution:
        from vsteer.server.artifact_access import check_scale
        from vsteer.server.errors import APIError

        P = ctx.param
        REFUSAL_MODES.check(r.model_fields_set, r.mode, P)
        applied: dict[str, Any] = {"mode": r.mode}
        if r.mode == "off":  # what the report of a mode that runs would say
            return Resolution(None, {"triggered": None, "score": None, "threshold": None,
                                     "artifact": None, **applied})
        who = ctx.principal
        if r.mode == "ablate" and not (who is not None and (who.admin or (
                who.tenant and who.tenant.policy.allow_ablate))):
            raise APIError(403, "refusal mode 'ablate' is operator-only (a policy may allow "
                           "it per tenant with allow_ablate)", param=f"{P}.mode",
                           code="operator_only")
        assert ctx.load_artifact is not None
        direction_name = r.direction
        ctrl = None
        if r.mode == "controller":
            if r.controller is None:
                raise APIError(400, f"{P}.controller is required for mode 'controller'",
                               param=f"{P}.controller", code="missing_field")
            ctrl = ctx.load_artifact("controller", r.controller, f"{P}.controller")
            direction_name = direction_name or ctrl.value.direction
            if direction_name != ctrl.value.direction:
                raise APIError(400, f"controller {r.controller!r} was trained with direction "
                               f"{ctrl.value.direction!r}, not {direction_name!r}",
                               param=f"{P}.direction", code="artifact_mismatch")
        if direction_name is None:
            raise APIError(400, f"{P}.direction is required for mode {r.mode!r}",
                           param=f"{P}.direction", code="missing_field")
        stored = ctx.load_artifact("direction", direction_name, f"{P}.direction")
        d = stored.value
        scale = check_scale(1.0 if r.scale is None else r.scale, ctx.max_abs_scale,
                            f"{P}.scale")
        applied.update({"artifact": direction_name, "layer": d.layer})
        path = str(stored.path)
        num_layers = ctx.fingerprint.num_layers
        if r.mode == "force":
            layers = sorted(set(r.layers)) if r.layers is not None else [d.layer]
            bad = [la for la in layers if not 0 <= la < num_layers]
            if bad:
                raise APIError(400, f"{P}.layers: {bad} out of range (0..{num_layers - 1})",
                               param=f"{P}.layers", code="layer_out_of_range")
            applied.update({"scale": scale, "layers": layers})
            steer = [steer_entry(direction_name, stored.sha256, path, layers, scale, "add",
                                 "all", part="refusal")] if scale != 0.0 else []
            return Resolution(None, applied, steer=steer)
        if r.mode == "ablate":
            return Resolution(None, applied, steer=[steer_entry(
                direction_name, stored.sha256, path, list(range(num_layers)), 1.0, "ablate",
                "all", part=f"refusal@{d.layer}")])
        if r.mode == "guard":
            cal = d.calibration
            if cal is None:
                raise APIError(400, f"direction {direction_name!r} has no guard calibration; "
                               f"run `vsteer refusal calibrate --direction {direction_name}`",
                               param=f"{P}.direction", code="not_calibrated")
            thr = cal.threshold if r.threshold is None else r.threshold
            wire = _decide("guard", cal.condition_layer, [d.layer], stored, thr, scale, P)
            applied.update({"threshold": thr, "condition_layer": cal.condition_layer,
                            "guard_kind": cal.kind, "scale": scale})
        else:
            assert ctrl is not None
            c = ctrl.value
            thr = c.threshold if r.threshold is None else r.threshold
            if c.direction_sha256 != stored.sha256:
                raise APIError(400, f"direction {direction_name!r} changed since controller "
                               f"{r.controller!r} was trained; retrain it",
                               param=f"{P}.controller", code="artifact_mismatch")
            force = list(range(c.input_layer + 1, num_layers))
            wire = _decide("controller", c.input_layer, force, stored, thr, 1.0, P, ctrl)
            applied.update({"threshold": thr, "controller": r.controller,
                            "condition_layer": c.input_layer})
        # the decision steers every token of the request at layers after it, from inside
        # the prefill: its KV blocks are never shared
        return Resolution(msgspec.to_builtins(wire), applied, private_prefill=True,
                          shared_slots=[wire.source_key], private_slots=1)

    def worker(self, ctx: WorkerContext):
        from vsteer.plugins.refusal_worker import RefusalWorker

        return RefusalWorker(ctx)

    def missing(self, applied: dict[str, Any], results: list[Any]) -> list[str]:
        if applied["mode"] in ("guard", "controller") and _decision(results) is None:
            return ["refusal decision"]
        return []

    def report(self, applied: dict[str, Any], results: list[Any]) -> dict[str, Any]:
        """{mode, triggered, score, threshold, artifact, ...}: force and ablate always
        apply; guard and controller report the worker's in-prefill decision."""
        from vsteer.server import metrics

        rep = {"triggered": None, "score": None, "threshold": None, "artifact": None,
               **applied}
        mode = rep["mode"]
        decision = _decision(results)
        if mode in ("force", "ablate"):
            rep["triggered"] = True
        elif decision is not None:
            rep["triggered"] = bool(decision["fired"])
            rep["score"] = float(decision["score"])
            metrics.REFUSAL_SCORE.labels(mode).observe(rep["score"])
        if mode != "off":
            metrics.REFUSAL_DECISIONS.labels(mode, str(rep["triggered"]).lower()).inc()
        return rep


def _decision(results: list[Any]) -> dict[str, Any] | None:
    return next((v["decision"] for v in results if isinstance(v, dict) and "decision" in v),
                None)


def _decide(kind: str, layer: int, force: list[int], stored: Any, thr: float, scale: float,
            P: str, ctrl: Any = None) -> WireDecide:
    from vsteer.server.errors import APIError

    if not math.isfinite(thr):
        raise APIError(400, f"{P}.threshold must be finite", param=f"{P}.threshold",
                       code="invalid_value")
    return WireDecide(
        kind=kind, layer=layer, direction_path=str(stored.path),
        direction_sha256=stored.sha256, force_layers=force,
        source_key=slot_key(f"{stored.name}#refusal", stored.sha256, force), threshold=thr,
        scale=scale, controller_path=str(ctrl.path) if ctrl else "",
        controller_sha256=ctrl.sha256 if ctrl else "")


def control() -> Refusal:
    """The entry point (`vsteer.controls`: refusal)."""
    return Refusal()
