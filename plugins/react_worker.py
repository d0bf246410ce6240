"""The worker half of `react` (plugins/react_control.py): one react slot per request
(its condition and action, and device state kept across steps), vector slots for the
steer / release actions, per-step token tables, `react_apply` at every layer, and the
state read back after the step. A `stop` request is ended by the sampler: the
logits processor (plugins/abstain.py) reads the slot's fired flag on the device."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

import vsteer.kernels  # noqa: F401  (registers the ops)
from vsteer.artifacts import ArtifactError, read_verified
from vsteer.kernels.react_op import KIND_COSINE, KIND_FEATURE, KIND_SIGMOID, MODES
from vsteer.plugins.api import ControlSetupError, RequestRows, WorkerContext, WorkerControl
from vsteer.plugins.device_buffer import HostDeviceBuffer, UploadFence

NUM_VECTORS = 16  # distinct (vector, layers) for steer / release in use at once


def condition_of(c: dict[str, Any]) -> tuple[int, int, np.ndarray, float, float]:
    """(kind, layer, weight [H], bias, bias2) of a condition's artifact (see
    kernels/react_op.py): a probe's per-token probe, a refusal direction's condition
    direction at `layer`, or one SAE feature."""
    from vsteer.artifacts import HallucinationProbe, RefusalDirection
    from vsteer.artifacts.sae import SparseAutoencoder

    try:
        data = read_verified(c["path"], c["sha256"])
        if c["source"] == "probe":
            p = HallucinationProbe.from_safetensors_bytes(data)
            return KIND_SIGMOID, p.token_layer, p.token_weight, p.token_bias, 0.0
        if c["source"] == "direction":
            d = RefusalDirection.from_safetensors_bytes(data)
            return KIND_COSINE, int(c["layer"]), d.condition[int(c["layer"])], 0.0, 0.0
        sae = SparseAutoencoder.from_safetensors_bytes(data)
        enc, bias, thr = sae.feature_encoder(int(c["feature"]))
        return KIND_FEATURE, sae.layer, enc, bias, thr
    except (ArtifactError, OSError, KeyError, IndexError) as e:
        raise ControlSetupError(f"react condition: {e}") from e


@dataclass
class ReactState:
    slot: int
    vector: int  # vector slot, -1 for stop
    mode: str
    prompt_tokens: int
    evaluated: bool = False  # this step
    told_fired: bool = False


class ReactWorker(WorkerControl):
    ends = True  # stop

    def __init__(self, ctx: WorkerContext) -> None:
        self.ctx = ctx
        dev, H, L, R, T = (ctx.device, ctx.hidden_size, ctx.num_layers, ctx.max_num_reqs,
                           ctx.max_num_tokens)
        f32, i32 = torch.float32, torch.int32
        # per react slot, written at setup
        self.cond_w = torch.zeros(R, H, dtype=f32, device=dev)  # [R, H]
        self.cond_b = torch.zeros(R, dtype=f32, device=dev)
        self.cond_b2 = torch.zeros(R, dtype=f32, device=dev)
        self.cond_kind = torch.zeros(R, dtype=i32, device=dev)
        self.cond_thr = torch.zeros(R, dtype=f32, device=dev)
        self.cond_layer = torch.full((R,), -1, dtype=torch.int64, device=dev)
        self.min_tokens = torch.ones(R, dtype=i32, device=dev)
        self.mode = torch.zeros(R, dtype=i32, device=dev)
        self.vec_of = torch.zeros(R, dtype=i32, device=dev)
        self.scale = torch.zeros(R, dtype=f32, device=dev)
        # per react slot, device state across steps
        self.streak = torch.zeros(R, dtype=i32, device=dev)
        self.fired = torch.zeros(R, dtype=i32, device=dev)
        self.fired_pos = torch.zeros(R, dtype=i32, device=dev)
        self.score_out = torch.zeros(R, dtype=f32, device=dev)
        self.vectors = torch.zeros(NUM_VECTORS, L, H, dtype=f32, device=dev)  # [V, L, H]
        # per step
        self.eval_row = HostDeviceBuffer(torch.full((R,), -1, dtype=i32), dev)  # [R]
        self.token_slot = HostDeviceBuffer(torch.full((T,), -1, dtype=i32), dev)  # [T]
        self.token_pos = HostDeviceBuffer(torch.zeros(T, dtype=i32), dev)  # [T]
        self.active = torch.zeros(1, dtype=torch.int64)  # CPU: react rows this step
        self.fence = UploadFence(dev)
        self.free = list(range(R - 1, -1, -1))
        self.vec_key: dict[str, int] = {}
        self.vec_users = [0] * NUM_VECTORS
        self._last_t = 0
        self._read: tuple[np.ndarray, ...] | None = None  # after-step state, read once

    def setup(self, wire: dict[str, Any], prompt_tokens: int) -> ReactState:
        if not self.free:
            raise ControlSetupError(f"all {self.ctx.max_num_reqs} react slots are in use")
        vec = -1
        if wire["mode"] != "stop":
            vec = self._vector(wire["steer"])
        try:
            kind, layer, w, b, b2 = condition_of(wire["condition"])
        except ControlSetupError:
            if vec >= 0:
                self.vec_users[vec] -= 1
            raise
        r = self.free.pop()
        self.cond_w[r] = torch.from_numpy(np.ascontiguousarray(w, np.float32))
        self.cond_b[r], self.cond_b2[r] = b, b2
        self.cond_kind[r], self.cond_thr[r] = kind, float(wire["threshold"])
        self.cond_layer[r], self.min_tokens[r] = layer, int(wire["min_tokens"])
        self.mode[r] = MODES[wire["mode"]]
        self.vec_of[r] = max(vec, 0)
        self.scale[r] = float(wire["steer"]["scale"]) if vec >= 0 else 0.0
        self.streak[r] = 0
        self.fired[r] = 0
        return ReactState(r, vec, wire["mode"], prompt_tokens)

    def _vector(self, steer: dict[str, Any]) -> int:
        from vsteer.artifacts import SteeringVector

        key = f"{steer['sha256']}:{','.join(map(str, steer['layers']))}"
        v = self.vec_key.get(key)
        if v is None:
            v = next((i for i in range(NUM_VECTORS) if self.vec_users[i] == 0), None)
            if v is None:
                raise ControlSetupError(f"all {NUM_VECTORS} react vectors are in use")
            try:
                sv = SteeringVector.from_safetensors_bytes(
                    read_verified(steer["path"], steer["sha256"]))
            except (ArtifactError, OSError) as e:
                raise ControlSetupError(str(e)) from e
            self.vectors[v].zero_()
            for la in steer["layers"]:
                self.vectors[v, la] = torch.from_numpy(np.asarray(sv.directions[la],
                                                                  np.float32))
            self.vec_key = {k: i for k, i in self.vec_key.items() if i != v}
            self.vec_key[key] = v
        self.vec_users[v] += 1
        return v

    def release(self, state: ReactState) -> None:
        self.free.append(state.slot)
        if state.vector >= 0:
            self.vec_users[state.vector] -= 1

    def ends_request(self, state: ReactState) -> tuple[torch.Tensor, int] | None:
        """Where the sampler reads whether to end this request now (stop only)."""
        return (self.fired, state.slot) if state.mode == "stop" else None

    def plan(self, rows: list[RequestRows]) -> None:
        self.fence.wait()
        self._read = None
        er, ts, tp = self.eval_row.np, self.token_slot.np, self.token_pos.np
        er[:] = -1
        ts[: self._last_t] = -1
        n, last = 0, 0
        for r in rows:
            st: ReactState = r.state
            a, b = r.start, r.end
            # rows from the last prompt token on (what the action may cover)
            lo = max(a, a + st.prompt_tokens - 1 - r.position)
            if b > lo:
                ts[lo:b] = st.slot
                tp[lo:b] = np.arange(r.position + lo - a, r.position + b - a)
                n += b - lo
                last = max(last, b)
            st.evaluated = bool(r.samples)
            if r.samples:
                er[st.slot] = b - 1
        self.token_slot.upload(max(last, self._last_t))
        self.token_pos.upload(last)
        self.eval_row.upload(self.ctx.max_num_reqs)
        self.fence.record()
        self._last_t = last
        self.active[0] = n

    def after_step(self) -> None:
        """No condition is due until the next plan: a forward between steps (warm-up,
        dummy batch) must not count towards any request's streak."""
        if int(self.active[0]):
            self.eval_row.device.fill_(-1)
            self.token_slot.device[: self._last_t].fill_(-1)
            self.active[0] = 0

    def on_layer(self, layer: int, hidden: torch.Tensor, residual: torch.Tensor | None
                 ) -> None:
        if self.ctx.eager and not int(self.active[0]):
            return
        torch.ops.vsteer.react_apply(
            hidden, residual, self.eval_row.device, self.token_slot.device,
            self.token_pos.device, self.cond_w, self.cond_b, self.cond_b2, self.cond_kind,
            self.cond_thr, self.cond_layer, self.min_tokens, self.streak, self.fired,
            self.fired_pos, self.score_out, self.mode, self.vec_of, self.scale, self.vectors,
            self.active, layer)

    def collect(self, rows: RequestRows) -> dict[str, Any] | None:
        st: ReactState = rows.state
        if not st.evaluated or st.told_fired:
            return None  # nothing checked this step (or fired before: checks stopped)
        if self._read is None:  # after the step: one read for every request
            self._read = tuple(t.cpu().numpy() for t in (self.score_out, self.fired,
                                                         self.fired_pos))
        score, fired, fired_pos = (a[st.slot] for a in self._read)
        out: dict[str, Any] = {"score": round(float(score), 6)}
        if fired and not st.told_fired:
            st.told_fired = True
            out["fired_at"] = int(fired_pos) - (st.prompt_tokens - 1)  # generated index
        return out
