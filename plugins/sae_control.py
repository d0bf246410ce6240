"""SAE features as controls (issue 18): `features` steers by SAE features, `monitor`
reports the most active ones. Both name an SAE imported with `vsteer sae import`
(vsteer/artifacts/sae.py has the semantics).

    "control": {"features": [{"sae": "smol-sae", "feature": 12, "op": "add", "value": 4}]}
    "control": {"monitor": {"sae": "smol-sae", "top_k": 5, "per_token": true}}

`features`: `add` adds value · W_dec[feature] to the stream after the SAE's layer (the
same as steering with W_dec[feature] as the vector, bit for bit); `clamp` sets the
feature's activation to `value` (encode that one feature, add (value - act) ·
W_dec[feature]). `positions` as in steering (plugins/position_window.py).

`monitor`: control.monitor.prompt = the top_k features (index, activation) at the last
prompt token; with per_token, control.monitor.tokens[i] = those at the position that
samples generated token i (tokens[0] is the last prompt token, like the per-token
probe's scores).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, RootModel

from vsteer.plugins.api import Control, Resolution, ResolveContext, WorkerContext
from vsteer.server.control_protocol import Positions, positions_json, wire_positions
from vsteer.wire import MAX_STEER_ENTRIES

MAX_TOP_K = 64


class FeatureEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    sae: str = Field(min_length=1, max_length=128)
    feature: int = Field(ge=0)
    op: Literal["add", "clamp"] = "add"
    value: float
    positions: Positions = "all"


class FeaturesRequest(RootModel[list[FeatureEntry]]):
    root: list[FeatureEntry] = Field(min_length=1, max_length=MAX_STEER_ENTRIES)


def _load_sae(ctx: ResolveContext, name: str, param: str):
    if ctx.load_artifact is None:
        raise ctx.error("this server cannot load artifacts for installed controls")
    return ctx.load_artifact("sae", name, param)


class Features(Control):
    name = "features"
    schema = FeaturesRequest

    def resolve(self, request: FeaturesRequest, ctx: ResolveContext) -> Resolution:
        entries, applied = [], []
        for i, e in enumerate(request.root):
            stored = _load_sae(ctx, e.sae, f"{ctx.param}[{i}].sae")
            sae = stored.value
            if e.feature >= sae.num_features:
                raise ctx.error(f"SAE {e.sae!r} has {sae.num_features} features "
                                f"(0..{sae.num_features - 1})", f"[{i}].feature",
                                code="feature_out_of_range")
            if abs(e.value) > ctx.max_abs_scale:
                raise ctx.error(f"must be within ±{ctx.max_abs_scale:g}", f"[{i}].value",
                                code="scale_out_of_range")
            positions, window = wire_positions(e.positions)
            entries.append({"path": str(stored.path), "sha256": stored.sha256,
                            "feature": e.feature, "op": e.op, "value": e.value,
                            "positions": positions, "window": window})
            applied.append({"sae": e.sae, "feature": e.feature, "op": e.op,
                            "value": e.value, "layer": sae.layer,
                            "positions": positions_json(e.positions)})
        windowed = any(w["positions"] != "all" for w in entries)
        return Resolution({"entries": entries}, {"entries": applied},
                          private_prefill=windowed)

    def worker(self, ctx: WorkerContext):
        from vsteer.plugins.sae_worker import FeaturesWorker

        return FeaturesWorker(ctx)

    def report(self, applied: dict[str, Any], results: list[Any]) -> dict[str, Any]:
        return {**applied, "tokens": sum(r["tokens"] for r in results)}


class MonitorRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sae: str = Field(min_length=1, max_length=128)
    top_k: int = Field(default=5, ge=1, le=MAX_TOP_K)
    per_token: bool = False


class Monitor(Control):
    name = "monitor"
    schema = MonitorRequest
    reads_only = True

    def resolve(self, request: MonitorRequest, ctx: ResolveContext) -> Resolution:
        stored = _load_sae(ctx, request.sae, f"{ctx.param}.sae")
        sae = stored.value
        top_k = min(request.top_k, sae.num_features)
        wire = {"path": str(stored.path), "sha256": stored.sha256, "top_k": top_k,
                "per_token": request.per_token}
        applied = {"sae": request.sae, "layer": sae.layer, "top_k": top_k,
                   "per_token": request.per_token}
        # the last prompt token must be computed here, not read from the prefix cache
        return Resolution(wire, applied, private_prefill=True)

    def worker(self, ctx: WorkerContext):
        from vsteer.plugins.sae_worker import MonitorWorker

        return MonitorWorker(ctx)

    def report(self, applied: dict[str, Any], results: list[Any]) -> dict[str, Any]:
        rows = sorted((r for r in results), key=lambda r: r["position"])
        out = {**applied, "prompt": rows[0] if rows else None}
        if applied["per_token"]:
            out["tokens"] = rows
        return out


def features() -> Features:
    return Features()


def monitor() -> Monitor:
    return Monitor()
