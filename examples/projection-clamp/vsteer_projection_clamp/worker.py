"""The worker half: unit directions in a few fixed device slots, one int32 row index per
token of the step, and the op at every layer (no read-back; graph-safe)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from vsteer.artifacts import ArtifactError, SteeringVector, read_verified
from vsteer.plugins.api import ControlSetupError, RequestRows, WorkerContext, WorkerControl
from vsteer.plugins.device_buffer import HostDeviceBuffer, UploadFence
from vsteer_projection_clamp import op  # noqa: F401  (registers torch.ops.vsteer_clamp)

NUM_DIRECTIONS = 16  # distinct (vector, layers) in use at once


@dataclass
class ClampState:
    key: str
    slot: int
    lo: float
    hi: float
    positions: str


class ClampWorker(WorkerControl):
    def __init__(self, ctx: WorkerContext) -> None:
        self.ctx = ctx
        dev = ctx.device
        self.dirs = torch.zeros(NUM_DIRECTIONS, ctx.num_layers, ctx.hidden_size,
                                dtype=torch.float32, device=dev)  # [D, L, H] unit or 0
        self.token_row = HostDeviceBuffer(
            torch.full((ctx.max_num_tokens,), -1, dtype=torch.int32), dev)  # [T]
        self.row_dir = HostDeviceBuffer(torch.zeros(ctx.max_num_reqs, dtype=torch.int32), dev)
        self.row_lo = HostDeviceBuffer(torch.zeros(ctx.max_num_reqs), dev)  # [R] fp32
        self.row_hi = HostDeviceBuffer(torch.zeros(ctx.max_num_reqs), dev)
        self.active = torch.zeros(1, dtype=torch.int64)  # CPU: tokens clamped this step
        self.fence = UploadFence(dev)
        self.slot_of: dict[str, int] = {}  # key -> slot (kept until the slot is reused)
        self.users = [0] * NUM_DIRECTIONS
        self._last_t = 0  # token rows written last step

    def setup(self, wire: dict[str, Any], prompt_tokens: int) -> ClampState:
        key = f"{wire['sha256']}:{','.join(map(str, wire['layers']))}"
        slot = self.slot_of.get(key)
        if slot is None:
            slot = self._free_slot()
            try:
                vec = SteeringVector.from_safetensors_bytes(
                    read_verified(wire["path"], wire["sha256"]))
            except (ArtifactError, OSError) as e:
                raise ControlSetupError(str(e)) from e
            self.dirs[slot].zero_()
            for la in wire["layers"]:
                d = np.asarray(vec.directions[la], np.float32)
                self.dirs[slot, la] = torch.from_numpy(d / max(np.linalg.norm(d), 1e-12))
            self.slot_of = {k: s for k, s in self.slot_of.items() if s != slot}
            self.slot_of[key] = slot
        self.users[slot] += 1
        lo = -math.inf if wire["lo"] is None else float(wire["lo"])
        hi = math.inf if wire["hi"] is None else float(wire["hi"])
        return ClampState(key, slot, lo, hi, wire["positions"])

    def _free_slot(self) -> int:
        for s in range(NUM_DIRECTIONS):
            if self.users[s] == 0:
                return s
        raise ControlSetupError(f"all {NUM_DIRECTIONS} clamp directions are in use")

    def release(self, state: ClampState) -> None:
        self.users[state.slot] -= 1

    def plan(self, rows: list[RequestRows]) -> None:
        self.fence.wait()  # the device has read last step's rows out of the staging
        tr = self.token_row.np
        tr[: self._last_t] = -1
        n, last = 0, 0
        for i, r in enumerate(rows):
            st: ClampState = r.state
            a, b = _clamped_rows(r)
            if b <= a:
                continue
            tr[a:b] = i
            self.row_dir.np[i], self.row_lo.np[i], self.row_hi.np[i] = st.slot, st.lo, st.hi
            n += b - a
            last = max(last, b)
        self.token_row.upload(max(last, self._last_t))
        for buf in (self.row_dir, self.row_lo, self.row_hi):
            buf.upload(len(rows))
        self.fence.record()
        self._last_t = last
        self.active[0] = n

    def on_layer(self, layer: int, hidden: torch.Tensor, residual: torch.Tensor | None
                 ) -> None:
        if self.ctx.eager and not int(self.active[0]):
            return  # not traced: idle steps cost one Python check
        torch.ops.vsteer_clamp.clamp_apply(hidden, residual, self.token_row.device,
                                           self.row_dir.device, self.row_lo.device,
                                           self.row_hi.device, self.dirs, self.active, layer)

    def collect(self, rows: RequestRows) -> dict[str, int]:
        a, b = _clamped_rows(rows)
        return {"tokens": max(b - a, 0)}


def _clamped_rows(r: RequestRows) -> tuple[int, int]:
    """The step's token rows the request's clamp covers (its `positions`)."""
    positions = r.state.positions
    if positions == "prompt":
        return r.start, r.prompt_end
    if positions == "generated":
        return r.prompt_end, r.end
    return r.start, r.end
