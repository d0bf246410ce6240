"""The `capture` control's worker half: per step, a [L, T] int32 index names the staging
row of every (layer, token) a request captures; `capture_rows` fills those rows at each
layer inside the forward (no read-back); after the step each request's rows leave the
staging buffer as float32 bytes in the step's report."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

import vsteer.kernels  # noqa: F401  (registers torch.ops.vsteer.capture_rows)
from vsteer.plugins.api import ControlSetupError, RequestRows, WorkerContext, WorkerControl
from vsteer.plugins.device_buffer import HostDeviceBuffer, UploadFence

# Staging rows (one per captured (layer, token) of a step): twice the step's tokens, at
# least 16384 (SmolLM2-135M: 38 MB; hidden 8192: 512 MB of device memory).
MIN_STAGE_ROWS = 16384


@dataclass
class CaptureState:
    layers: list[int]
    positions: str  # last | prompt | generated | all
    prompt_tokens: int
    next_pos: int = 0  # positions below this were captured (a recompute skips them)
    rows: tuple[int, int] = (0, 0)  # this step: (stage offset, tokens)
    lost: int = 0  # tokens not captured: a step's rows did not fit the staging buffer


class CaptureWorker(WorkerControl):
    def __init__(self, ctx: WorkerContext) -> None:
        self.ctx = ctx
        T, L, H = ctx.max_num_tokens, ctx.num_layers, ctx.hidden_size
        self.capacity = max(2 * T, MIN_STAGE_ROWS)
        self.index = HostDeviceBuffer(torch.full((L, T), -1, dtype=torch.int32), ctx.device)
        self.stage = torch.zeros(self.capacity + 1, H, dtype=torch.float32,
                                 device=ctx.device)  # [R + 1, H], last row: trash
        self.active = torch.zeros(L, dtype=torch.int64)  # CPU: [L] rows captured per layer
        self._active = self.active.numpy()
        self.fence = UploadFence(ctx.device)
        self._touched: list[tuple[int, int, int]] = []  # (layer, a, b) written last step

    def setup(self, wire: dict, prompt_tokens: int) -> CaptureState:
        layers = [int(la) for la in wire["layers"]]
        if not layers or max(layers) >= self.ctx.num_layers:
            raise ControlSetupError(f"capture layers {layers} are not layers of this model")
        return CaptureState(layers, wire["positions"], prompt_tokens)

    def plan(self, rows: list[RequestRows]) -> None:
        self.fence.wait()
        idx = self.index.np
        for la, a, b in self._touched:
            idx[la, a:b] = -1
        self._touched = []
        self._active[:] = 0
        used = 0
        for r in rows:
            st: CaptureState = r.state
            a, b = self._rows(r, st)
            m, k = len(st.layers), max(b - a, 0)
            st.rows = (used, 0)
            if not k:
                continue
            st.next_pos = r.position + (b - r.start)
            if used + m * k > self.capacity:
                st.lost += k  # reported as missing tokens; the next step starts afresh
                continue
            for j, la in enumerate(st.layers):
                idx[la, a:b] = np.arange(used + j * k, used + (j + 1) * k)
                self._touched.append((la, a, b))
                self._active[la] += k
            st.rows = (used, k)
            used += m * k
        self.index.upload(self.ctx.num_layers)
        self.fence.record()

    @staticmethod
    def _rows(r: RequestRows, st: CaptureState) -> tuple[int, int]:
        """The step's token rows this request captures, new positions only."""
        if st.positions == "last":
            last = st.prompt_tokens - 1
            row = r.start + last - r.position
            a, b = (row, row + 1) if r.start <= row < r.prompt_end else (0, 0)
        elif st.positions == "prompt":
            a, b = r.start, r.prompt_end
        elif st.positions == "generated":
            a, b = r.prompt_end, r.end
        else:
            a, b = r.start, r.end
        a = max(a, r.start + st.next_pos - r.position)  # recomputed positions: once
        return (a, b) if b > a else (0, 0)

    def on_layer(self, layer: int, hidden: torch.Tensor, residual: torch.Tensor | None
                 ) -> None:
        if self.ctx.eager and not int(self.active[layer]):
            return  # not traced: a layer nobody captures costs one Python check
        torch.ops.vsteer.capture_rows(hidden, residual, self.index.device, self.stage,
                                      self.active, layer)

    def collect(self, rows: RequestRows) -> dict | None:
        st: CaptureState = rows.state
        off, k = st.rows
        if not k and not st.lost:
            return None
        m = len(st.layers)
        data = self.stage[off: off + m * k].cpu().numpy()  # [m * k, H], after the step
        lost, st.lost = st.lost, 0
        return {"tokens": k, "lost": lost, "data": data.tobytes()}
