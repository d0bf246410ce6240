"""`capture`: the residual stream of a request's own tokens back in its response.

    "control": {"capture": {"layers": [6, 12], "positions": "last"}}

returns in `control.capture`: {"layers", "positions", "dtype": "float32",
"shape": [n_layers, n_tokens, hidden], "data": base64 of little-endian float32 in C
order}. Layer l is the stream after decoder layer l (transformers' hidden_states[l+1]).
`positions`: `last` (the last prompt token), `prompt`, `generated`, or `all`. Generated
tokens are captured as they are fed to the model, so the last sampled token (which no
forward pass reads) is not among them: a reply of C tokens captures C - 1.

A vsteer control registered through the same entry-point group as any installed one
(pyproject.toml: vsteer.controls).
"""

from __future__ import annotations

import base64
import os
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from vsteer.plugins.api import Control, Resolution, ResolveContext, WorkerContext

# Bytes one reply may carry back (before base64): layers x tokens x hidden x 4.
MAX_CAPTURE_BYTES = int(float(os.environ.get("VSTEER_MAX_CAPTURE_MB", "64")) * 2**20)


class CaptureRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    layers: list[int] = Field(min_length=1, max_length=512)
    positions: Literal["last", "prompt", "generated", "all"] = "last"


class Capture(Control):
    name = "capture"
    schema = CaptureRequest
    reads_only = True

    def resolve(self, request: CaptureRequest, ctx: ResolveContext) -> Resolution:
        layers = sorted(set(request.layers))
        n = ctx.fingerprint.num_layers
        for la in layers:
            if not 0 <= la < n:
                raise ctx.error(f"layer {la} is out of range (0..{n - 1})", "layers",
                                code="layer_out_of_range")
        gen = ctx.max_tokens if ctx.max_tokens is not None else ctx.max_model_len
        tokens = {"last": 1, "generated": gen}.get(request.positions, ctx.max_model_len)
        size = len(layers) * tokens * ctx.fingerprint.hidden_size * 4
        if size > MAX_CAPTURE_BYTES:
            raise ctx.error(
                f"{len(layers)} layers x up to {tokens} tokens x {ctx.fingerprint.hidden_size}"
                f" float32 is {size / 2**20:.1f} MiB, above the server's "
                f"{MAX_CAPTURE_BYTES / 2**20:g} MiB per reply (fewer layers, positions "
                "'last', or a smaller max_tokens)", code="capture_too_large")
        wire = {"layers": layers, "positions": request.positions}
        return Resolution(wire, dict(wire), private_prefill=request.positions != "generated")

    def worker(self, ctx: WorkerContext):
        from vsteer.plugins.capture_worker import CaptureWorker

        return CaptureWorker(ctx)

    def report(self, applied: dict[str, Any], results: list[Any]) -> dict[str, Any]:
        m = len(applied["layers"])
        parts = [np.frombuffer(r["data"], np.float32).reshape(m, r["tokens"], -1)
                 for r in results if r["tokens"]]
        data = (np.concatenate(parts, axis=1) if parts
                else np.zeros((m, 0, 0), np.float32))  # [m, n, H]
        out = {**applied, "dtype": "float32", "shape": list(data.shape),
               "data": base64.b64encode(data.astype("<f4").tobytes()).decode()}
        lost = sum(r.get("lost", 0) for r in results)
        if lost:
            out["lost_tokens"] = lost  # a step's rows did not fit the worker's staging
        return out


def control() -> Capture:
    """The entry point (`vsteer.controls`: capture)."""
    return Capture()
