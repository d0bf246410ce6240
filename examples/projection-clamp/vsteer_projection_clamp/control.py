"""The server half: the request schema, its validation against the vector store, and
the response report."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from vsteer.plugins.api import Control, Resolution, ResolveContext, WorkerContext


class ClampRequest(BaseModel):
    """control.projection_clamp"""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    vector: str = Field(min_length=1, max_length=128)  # a steering vector artifact
    lo: float | None = None  # floor of x . u (u: the vector's unit direction)
    hi: float | None = None  # ceiling
    layers: list[int] | None = Field(default=None, max_length=512)  # default: the vector's
    positions: Literal["all", "prompt", "generated"] = "all"


class ProjectionClamp(Control):
    name = "projection_clamp"
    schema = ClampRequest

    def resolve(self, request: ClampRequest, ctx: ResolveContext) -> Resolution:
        if request.lo is None and request.hi is None:
            raise ctx.error("give lo, hi or both", code="missing_field")
        if request.lo is not None and request.hi is not None and request.lo > request.hi:
            raise ctx.error(f"lo ({request.lo:g}) is above hi ({request.hi:g})", "lo",
                            code="conflicting_fields")
        vec = ctx.load_vector(request.vector, f"{ctx.param}.vector")
        layers = sorted(set(request.layers)) if request.layers is not None else vec.layers
        for la in layers:
            if not 0 <= la < ctx.fingerprint.num_layers:
                raise ctx.error(f"layer {la} is out of range", "layers",
                                code="layer_out_of_range")
            if la not in vec.directions:
                raise ctx.error(f"vector {vec.name!r} has no direction at layer {la}",
                                "layers", code="layer_not_in_artifact")
        applied = {"vector": vec.name, "lo": request.lo, "hi": request.hi,
                   "layers": layers, "positions": request.positions}
        wire = {"path": vec.path, "sha256": vec.sha256, "layers": layers,
                "lo": request.lo, "hi": request.hi, "positions": request.positions}
        return Resolution(wire, applied)

    def worker(self, ctx: WorkerContext):
        from vsteer_projection_clamp.worker import ClampWorker

        return ClampWorker(ctx)

    def report(self, applied: dict[str, Any], results: list[Any]) -> dict[str, Any]:
        """`tokens`: how many token positions the clamp ran on (prompt and generated;
        a reply of C tokens to a P-token prompt passes P + C - 1 through the model)."""
        return {**applied, "tokens": sum(r["tokens"] for r in results)}
