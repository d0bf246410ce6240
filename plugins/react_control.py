"""`react`: a condition checked at every token the request samples, and what happens
once it has held for `min_tokens` tokens in a row (issue 18):

    "control": {"react": {
        "when": {"probe": "geo-probe"}                    # its per-token probe: sigmoid
              | {"direction": "refusal", "layer": 8}      # cosine with the direction's
                                                          #   condition (harmfulness) vector
              | {"sae": "smol-sae", "feature": 12},       # the feature's activation
        "threshold": 0.6, "min_tokens": 2,
        "action": "stop" | "steer" | "release",
        "steer": {"vector": "calm", "scale": 4, "layers": [10, 11]}}}   # steer / release

The condition is read at the row that samples each generated token (for token 0, the
last prompt token), on the stream after its layer. It fires at generated token g when
it has held at the rows sampling tokens g - min_tokens + 1 .. g. Then:
`stop` ends the reply there: token g is the end token and `finish_reason` is
`content_filter`; `steer` adds the vector to token g's stream at layers after the
condition's layer and to every later token at every listed layer (so token g is the
first token sampled under it); `release` adds it from the last prompt token on until
exactly that point. The response says where: `control.react.fired_at` = g (null: it
never fired), with the score at every checked token (`scores`, up to the firing one).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from vsteer.plugins.api import Control, Resolution, ResolveContext, WorkerContext

FEATURE_DEFAULT_THRESHOLD = 1e-6  # an SAE feature's condition: it is active
PROBE_DEFAULT_THRESHOLD = 0.5


class ReactCondition(BaseModel):
    model_config = ConfigDict(extra="forbid")

    probe: str | None = Field(default=None, min_length=1, max_length=128)
    direction: str | None = Field(default=None, min_length=1, max_length=128)
    layer: int | None = None  # direction only (default: its calibrated guard layer)
    sae: str | None = Field(default=None, min_length=1, max_length=128)
    feature: int | None = Field(default=None, ge=0)  # sae only


class ReactSteer(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    vector: str = Field(min_length=1, max_length=128)
    scale: float = 1.0
    layers: list[int] | None = Field(default=None, max_length=512)


class ReactRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    when: ReactCondition
    threshold: float | None = None
    min_tokens: int = Field(default=1, ge=1, le=4096)
    action: Literal["stop", "steer", "release"] = "stop"
    steer: ReactSteer | None = None


class React(Control):
    name = "react"
    schema = ReactRequest
    finishes = True  # a `stop` that fired sets the reply's finish_reason

    def resolve(self, request: ReactRequest, ctx: ResolveContext) -> Resolution:
        cond, threshold, applied_when = self._condition(request, ctx)
        steer_wire, steer_applied = None, None
        if request.action == "stop":
            if request.steer is not None:
                raise ctx.error("only steer and release take a vector", "steer",
                                code="field_not_applicable")
            if ctx.n > 1:
                raise ctx.error("stop needs n = 1 (each choice would need its own end)",
                                "action", code="unsupported_combination")
            if not ctx.stops_at_eos:
                raise ctx.error("stop cannot be combined with ignore_eos or min_tokens > 0",
                                "action", code="conflicting_fields")
        else:
            if request.steer is None:
                raise ctx.error(f"action {request.action!r} needs steer: {{vector, scale}}",
                                "steer", code="missing_field")
            steer_wire, steer_applied = self._steer(request.steer, ctx)
        wire = {"condition": cond, "threshold": threshold, "min_tokens": request.min_tokens,
                "mode": request.action, "steer": steer_wire}
        applied = {"when": applied_when, "threshold": threshold,
                   "min_tokens": request.min_tokens, "action": request.action}
        if steer_applied is not None:
            applied["steer"] = steer_applied
        # steer / release change the last prompt token's stream, which must not come
        # from (or go to) another request's prefix-cache blocks
        return Resolution(wire, applied, private_prefill=request.action != "stop")

    def _condition(self, request: ReactRequest, ctx: ResolveContext
                   ) -> tuple[dict[str, Any], float, dict[str, Any]]:
        w = request.when
        named = [k for k in ("probe", "direction", "sae") if getattr(w, k) is not None]
        if len(named) != 1:
            raise ctx.error("name exactly one of probe, direction or sae", "when",
                            code="missing_field" if not named else "conflicting_fields")
        kind = named[0]
        if kind != "direction" and w.layer is not None:
            raise ctx.error("layer is for a direction", "when.layer",
                            code="field_not_applicable")
        if kind != "sae" and w.feature is not None:
            raise ctx.error("feature is for an SAE", "when.feature",
                            code="field_not_applicable")
        name = getattr(w, kind)
        stored = ctx.load_artifact(kind, name, f"{ctx.param}.when.{kind}")
        art = stored.value
        cond = {"source": kind, "path": str(stored.path), "sha256": stored.sha256}
        applied = {kind: name}
        threshold = request.threshold
        if kind == "probe":
            if not art.has_token_probe:
                raise ctx.error(f"probe {name!r} has no per-token probe", "when.probe")
            layer = art.token_layer
            threshold = PROBE_DEFAULT_THRESHOLD if threshold is None else threshold
        elif kind == "direction":
            cal = art.calibration
            cal_layer = cal.condition_layer if cal is not None else None
            layer = w.layer if w.layer is not None else cal_layer
            if layer is None:
                raise ctx.error(f"direction {name!r} has no calibrated layer: give one",
                                "when.layer", code="missing_field")
            if not 0 <= layer < ctx.fingerprint.num_layers:
                raise ctx.error(f"layer {layer} is out of range", "when.layer",
                                code="layer_out_of_range")
            if threshold is None:
                if cal is None or cal.kind != "cosine" or cal.condition_layer != layer:
                    raise ctx.error(f"direction {name!r} has no cosine calibration at layer "
                                    f"{layer}: give a threshold", "threshold",
                                    code="missing_field")
                threshold = cal.threshold
            cond["layer"] = layer
        else:
            if w.feature is None:
                raise ctx.error("an SAE condition needs feature", "when.feature",
                                code="missing_field")
            if w.feature >= art.num_features:
                raise ctx.error(f"SAE {name!r} has {art.num_features} features",
                                "when.feature", code="feature_out_of_range")
            cond["feature"] = w.feature
            applied["feature"] = w.feature
            layer = art.layer
            threshold = FEATURE_DEFAULT_THRESHOLD if threshold is None else threshold
        applied["layer"] = layer
        return cond, float(threshold), applied

    def _steer(self, s: ReactSteer, ctx: ResolveContext
               ) -> tuple[dict[str, Any], dict[str, Any]]:
        v = ctx.load_vector(s.vector, f"{ctx.param}.steer.vector")
        layers = sorted(set(s.layers)) if s.layers is not None else list(v.layers)
        bad = [la for la in layers if la not in v.layers]
        if bad:
            raise ctx.error(f"vector {s.vector!r} has no direction at layers {bad}",
                            "steer.layers", code="layer_not_in_artifact")
        if abs(s.scale) > ctx.max_abs_scale:
            raise ctx.error(f"must be within ±{ctx.max_abs_scale:g}", "steer.scale",
                            code="scale_out_of_range")
        return ({"path": v.path, "sha256": v.sha256, "layers": layers, "scale": s.scale},
                {"vector": s.vector, "scale": s.scale, "layers": layers})

    def worker(self, ctx: WorkerContext):
        from vsteer.plugins.react_worker import ReactWorker

        return ReactWorker(ctx)

    def report(self, applied: dict[str, Any], results: list[Any]) -> dict[str, Any]:
        fired_at = next((r["fired_at"] for r in results if "fired_at" in r), None)
        return {**applied, "fired": fired_at is not None, "fired_at": fired_at,
                "scores": [r["score"] for r in results]}

    def finish_reason(self, report: dict[str, Any]) -> str | None:
        """The reply's finish_reason when this control ended it."""
        return "content_filter" if report["action"] == "stop" and report["fired"] else None


def control() -> React:
    return React()
