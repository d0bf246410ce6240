"""Resolve `control.refusal` into wire entries (force / ablate) or an in-prefill
decision (guard / controller). Every failure is an APIError raised before the engine."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from vsteer.artifacts import ArtifactError, ArtifactStore, ModelFingerprint, Stored, check_name
from vsteer.server.auth import Principal
from vsteer.server.control_protocol import REFUSAL_MODES, RefusalControl
from vsteer.server.errors import APIError
from vsteer.wire import WireDecide, WireSteer, slot_key, steer_entry

P = "control.refusal"


@dataclass
class ResolvedRefusal:
    steer: list[WireSteer] = field(default_factory=list)
    decide: WireDecide | None = None
    applied: dict[str, Any] = field(default_factory=dict)


LABELS = {"vector": "steering vector", "direction": "refusal direction",
          "controller": "refusal controller", "probe": "hallucination probe",
          "exit": "exit predictor", "sae": "SAE", "experts": "expert set"}


def load_artifact(store: ArtifactStore, fp: ModelFingerprint, kind: str, name: str,
                  param: str, who: Principal) -> Stored:
    label = LABELS[kind]
    if who.tenant is not None and not who.tenant.policy.may_use(name):
        raise APIError(403, f"{label} {name!r} is not allowed for tenant {who.tenant.name!r}",
                       param=param, code="artifact_not_allowed")
    try:
        check_name(name)
        stored = store.get(kind, name)
    except KeyError:
        raise APIError(400, f"unknown {label} {name!r}", param=param,
                       code=f"unknown_{kind}") from None
    except ArtifactError as e:
        raise APIError(400, f"{label} {name!r} is unusable: {e}", param=param,
                       code="artifact_invalid") from None
    if (why := stored.value.fingerprint.mismatch(fp)) is not None:
        raise APIError(400, f"{label} {name!r} was {why}", param=param, code="wrong_model")
    return stored


def check_scale(value: float, bound: float, param: str) -> float:
    if not math.isfinite(value) or abs(value) > bound:
        raise APIError(400, f"{param} must be finite and within ±{bound:g}", param=param,
                       code="scale_out_of_range")
    return value


def resolve_refusal(r: RefusalControl, rid: str, store: ArtifactStore, fp: ModelFingerprint,
                    who: Principal, max_abs_scale: float) -> ResolvedRefusal:
    REFUSAL_MODES.check(r.model_fields_set, r.mode, P)
    out = ResolvedRefusal(applied={"mode": r.mode})
    if r.mode == "off":
        return out
    if r.mode == "ablate" and not (who.admin or (who.tenant and who.tenant.policy.allow_ablate)):
        raise APIError(403, "refusal mode 'ablate' is operator-only (a policy may allow it "
                       "per tenant with allow_ablate)", param=f"{P}.mode", code="operator_only")
    direction_name = r.direction
    ctrl = None
    if r.mode == "controller":
        if r.controller is None:
            raise APIError(400, f"{P}.controller is required for mode 'controller'",
                           param=f"{P}.controller", code="missing_field")
        ctrl = load_artifact(store, fp, "controller", r.controller, f"{P}.controller", who)
        direction_name = direction_name or ctrl.value.direction
        if direction_name != ctrl.value.direction:
            raise APIError(400, f"controller {r.controller!r} was trained with direction "
                           f"{ctrl.value.direction!r}, not {direction_name!r}",
                           param=f"{P}.direction", code="artifact_mismatch")
    if direction_name is None:
        raise APIError(400, f"{P}.direction is required for mode {r.mode!r}",
                       param=f"{P}.direction", code="missing_field")
    stored = load_artifact(store, fp, "direction", direction_name, f"{P}.direction", who)
    d = stored.value
    scale = check_scale(1.0 if r.scale is None else r.scale, max_abs_scale, f"{P}.scale")
    out.applied.update({"artifact": direction_name, "layer": d.layer})
    path = str(stored.path)
    if r.mode == "force":
        layers = sorted(set(r.layers)) if r.layers is not None else [d.layer]
        bad = [la for la in layers if not 0 <= la < fp.num_layers]
        if bad:
            raise APIError(400, f"{P}.layers: {bad} out of range (0..{fp.num_layers - 1})",
                           param=f"{P}.layers", code="layer_out_of_range")
        if scale != 0.0:
            out.steer.append(steer_entry(direction_name, stored.sha256, path, layers, scale,
                                         "add", "all", part="refusal"))
        out.applied.update({"scale": scale, "layers": layers})
    elif r.mode == "ablate":
        out.steer.append(steer_entry(direction_name, stored.sha256, path,
                                     list(range(fp.num_layers)), 1.0, "ablate", "all",
                                     part=f"refusal@{d.layer}"))
    elif r.mode == "guard":
        cal = d.calibration
        if cal is None:
            raise APIError(400, f"direction {direction_name!r} has no guard calibration; run "
                           f"`vsteer refusal calibrate --direction {direction_name}`",
                           param=f"{P}.direction", code="not_calibrated")
        thr = cal.threshold if r.threshold is None else r.threshold
        out.decide = _decide("guard", cal.condition_layer, [d.layer], stored, path, thr,
                             scale, rid)
        out.applied.update({"threshold": thr, "condition_layer": cal.condition_layer,
                            "guard_kind": cal.kind,
                            "scale": scale})
    else:
        c = ctrl.value
        thr = c.threshold if r.threshold is None else r.threshold
        if c.direction_sha256 != stored.sha256:
            raise APIError(400, f"direction {direction_name!r} changed since controller "
                           f"{r.controller!r} was trained; retrain it", param=f"{P}.controller",
                           code="artifact_mismatch")
        force = list(range(c.input_layer + 1, fp.num_layers))
        out.decide = _decide("controller", c.input_layer, force, stored, path, thr, 1.0, rid,
                             ctrl)
        out.applied.update({"threshold": thr, "controller": r.controller,
                            "condition_layer": c.input_layer})
    return out


def _decide(kind: str, layer: int, force: list[int], stored: Stored, path: str, thr: float,
            scale: float, rid: str, ctrl: Stored | None = None) -> WireDecide:
    if not math.isfinite(thr):
        raise APIError(400, f"{P}.threshold must be finite", param=f"{P}.threshold",
                       code="invalid_value")
    return WireDecide(
        kind=kind, layer=layer, direction_path=path, direction_sha256=stored.sha256,
        force_layers=force, source_key=slot_key(f"{stored.name}#refusal", stored.sha256, force),
        target_key=f"decide:{rid}", threshold=thr, scale=scale,
        controller_path=str(ctrl.path) if ctrl else "",
        controller_sha256=ctrl.sha256 if ctrl else "")
