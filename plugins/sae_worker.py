"""The worker halves of `features` and `monitor` (plugins/sae_control.py).

features: fixed feature slots on the device (one SAE feature each: decoder row, encoder
column, bias, threshold, layer), a per-step row table of (slot, op, value) entries and
one int32 row index per token; `torch.ops.vsteer.sae_features` at every layer.

monitor: the stream of each monitored request's scoring row (its last prompt token,
and with per_token each row that samples a token) is copied at the SAE's layer into a
staging row inside the forward (`capture_rows`); after the step the host encodes
those rows with the SAE on the device and reads back the top k.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

import vsteer.kernels  # noqa: F401  (registers the ops)
from vsteer.artifacts import ArtifactError, read_verified
from vsteer.artifacts.sae import SparseAutoencoder
from vsteer.kernels.sae_features_op import SAE_OPS
from vsteer.plugins.api import ControlSetupError, RequestRows, WorkerContext, WorkerControl
from vsteer.plugins.device_buffer import HostDeviceBuffer, UploadFence
from vsteer.plugins.position_window import Segment, segments, span
from vsteer.wire import MAX_STEER_ENTRIES

NUM_FEATURE_SLOTS = 64  # distinct (SAE, feature) in use at once; slot 0 stays empty
SAE_CACHE = 4  # SAEs kept parsed on the host (features) / on the device (monitor)


def _read_sae(path: str, sha256: str) -> SparseAutoencoder:
    try:
        return SparseAutoencoder.from_safetensors_bytes(read_verified(path, sha256))
    except (ArtifactError, OSError) as e:
        raise ControlSetupError(str(e)) from e


class _Lru(OrderedDict):
    def get_or(self, key: str, make):
        if key in self:
            self.move_to_end(key)
            return self[key]
        value = self[key] = make()
        while len(self) > SAE_CACHE:
            self.popitem(last=False)
        return value


@dataclass
class FeatureState:
    slots: list[int]
    segments: list[Segment]
    tokens: int = 0  # token rows moved this step, at positions not moved before
    next_pos: int = 0  # positions below this ran in an earlier step (a recompute)


class FeaturesWorker(WorkerControl):
    def __init__(self, ctx: WorkerContext) -> None:
        self.ctx = ctx
        dev, H, S = ctx.device, ctx.hidden_size, NUM_FEATURE_SLOTS
        K = MAX_STEER_ENTRIES
        self.dec = torch.zeros(S, H, dtype=torch.float32, device=dev)  # [S, H]
        self.enc = torch.zeros(S, H, dtype=torch.float32, device=dev)  # [S, H]
        self.bias = torch.zeros(S, dtype=torch.float32, device=dev)  # [S]
        self.thr = torch.zeros(S, dtype=torch.float32, device=dev)  # [S]
        self.layer_of = torch.full((S,), -1, dtype=torch.int64, device=dev)  # [S]
        self._slot_layer = [-1] * S
        # rows: a request's segments in this step; at most 2K + 1 segments each
        R = (2 * K + 1) * ctx.max_num_reqs
        self.token_row = HostDeviceBuffer(
            torch.full((ctx.max_num_tokens,), -1, dtype=torch.int32), dev)  # [T]
        self.row_slot = HostDeviceBuffer(torch.zeros(R, K, dtype=torch.int32), dev)  # [R, K]
        self.row_op = HostDeviceBuffer(torch.zeros(R, K, dtype=torch.int32), dev)  # [R, K]
        self.row_value = HostDeviceBuffer(torch.zeros(R, K, dtype=torch.float32), dev)
        self.active = torch.zeros(ctx.num_layers, dtype=torch.int64)  # CPU: [L] tokens
        self._active = self.active.numpy()
        self.fence = UploadFence(dev)
        self.slot_of: dict[str, int] = {}
        self.users = [0] * S
        self.saes = _Lru()
        self._last_t = 0

    def setup(self, wire: dict[str, Any], prompt_tokens: int) -> FeatureState:
        slots, spans = [], []
        try:
            for e in wire["entries"]:
                s = self._acquire(e)
                slots.append(s)
                spans.append(((s, SAE_OPS[e["op"]], float(e["value"])),
                              span(e["positions"], e["window"], prompt_tokens)))
        except ControlSetupError:
            for s in slots:
                self.users[s] -= 1
            raise
        return FeatureState(slots, segments(spans))

    def _acquire(self, e: dict[str, Any]) -> int:
        key = f"{e['sha256']}:{e['feature']}"
        s = self.slot_of.get(key)
        if s is None:
            sae = self.saes.get_or(e["sha256"], lambda: _read_sae(e["path"], e["sha256"]))
            s = next((i for i in range(1, NUM_FEATURE_SLOTS) if self.users[i] == 0), None)
            if s is None:
                raise ControlSetupError(f"all {NUM_FEATURE_SLOTS - 1} SAE feature slots "
                                        "are in use")
            f = int(e["feature"])
            enc, bias, thr = sae.feature_encoder(f)
            self.dec[s] = torch.from_numpy(np.ascontiguousarray(sae.W_dec[f]))
            self.enc[s] = torch.from_numpy(np.ascontiguousarray(enc))
            self.bias[s] = bias
            self.thr[s] = thr
            self.layer_of[s] = sae.layer
            self._slot_layer[s] = sae.layer
            self.slot_of = {k: v for k, v in self.slot_of.items() if v != s}
            self.slot_of[key] = s
        self.users[s] += 1
        return s

    def release(self, state: FeatureState) -> None:
        for s in state.slots:
            self.users[s] -= 1

    def plan(self, rows: list[RequestRows]) -> None:
        self.fence.wait()  # the device has read last step's tables
        tr = self.token_row.np
        tr[: self._last_t] = -1
        self._active[:] = 0
        n_rows, last = 0, 0
        for r in rows:
            st: FeatureState = r.state
            st.tokens = 0
            for seg in st.segments:
                hit = seg.overlap(r.position, r.end - r.start)
                if hit is None:
                    continue
                a, b = r.start + hit[0], r.start + hit[1]
                k = len(seg.entries)
                self.row_slot.np[n_rows, :k] = [e[0] for e in seg.entries]
                self.row_slot.np[n_rows, k:] = 0
                self.row_op.np[n_rows, :k] = [e[1] for e in seg.entries]
                self.row_value.np[n_rows, :k] = [e[2] for e in seg.entries]
                tr[a:b] = n_rows
                for la in {self._slot_layer[e[0]] for e in seg.entries}:
                    self._active[la] += b - a
                # moved again on a recompute after preemption, but counted once
                st.tokens += b - max(a, min(b, r.start + st.next_pos - r.position))
                n_rows += 1
                last = max(last, b)
            st.next_pos = max(st.next_pos, r.position + r.end - r.start)
        self.token_row.upload(max(last, self._last_t))
        for buf in (self.row_slot, self.row_op, self.row_value):
            buf.upload(n_rows)
        self.fence.record()
        self._last_t = last

    def on_layer(self, layer: int, hidden: torch.Tensor, residual: torch.Tensor | None
                 ) -> None:
        if self.ctx.eager and not int(self.active[layer]):
            return  # not traced: a layer no feature acts on costs one Python check
        torch.ops.vsteer.sae_features(hidden, residual, self.token_row.device,
                                      self.row_slot.device, self.row_op.device,
                                      self.row_value.device, self.dec, self.enc, self.bias,
                                      self.thr, self.layer_of, self.active, layer)

    def collect(self, rows: RequestRows) -> dict[str, int]:
        return {"tokens": rows.state.tokens}


@dataclass
class _DeviceSae:
    layer: int
    W_enc: torch.Tensor  # [H, F]
    b_enc: torch.Tensor  # [F]
    b_dec: torch.Tensor  # [H]
    thr: torch.Tensor  # [F], 0 for ReLU
    subtract_b_dec: bool

    def encode(self, x: torch.Tensor) -> torch.Tensor:  # [n, H] -> [n, F]
        if self.subtract_b_dec:
            x = x - self.b_dec
        pre = x @ self.W_enc + self.b_enc
        return torch.where(pre > self.thr, pre, torch.zeros_like(pre))


@dataclass
class MonitorState:
    sae: _DeviceSae
    top_k: int
    per_token: bool
    prompt_tokens: int
    next_pos: int = 0  # positions below this were reported (a recompute skips them)
    row: int = -1  # this step's staging row, and the position it holds
    position: int = -1


class MonitorWorker(WorkerControl):
    def __init__(self, ctx: WorkerContext) -> None:
        self.ctx = ctx
        L, T = ctx.num_layers, ctx.max_num_tokens
        self.index = HostDeviceBuffer(torch.full((L, T), -1, dtype=torch.int32), ctx.device)
        self.stage = torch.zeros(ctx.max_num_reqs + 1, ctx.hidden_size, dtype=torch.float32,
                                 device=ctx.device)  # [R + 1, H], last row: trash
        self.active = torch.zeros(L, dtype=torch.int64)  # CPU: [L] rows staged per layer
        self._active = self.active.numpy()
        self.fence = UploadFence(ctx.device)
        self.saes = _Lru()
        self._touched: list[tuple[int, int]] = []

    def setup(self, wire: dict[str, Any], prompt_tokens: int) -> MonitorState:
        def load() -> _DeviceSae:
            sae = _read_sae(wire["path"], wire["sha256"])
            dev = self.ctx.device

            def t(a):
                return torch.from_numpy(np.ascontiguousarray(a, np.float32)).to(dev)

            thr = sae.threshold if sae.threshold is not None else np.zeros(sae.num_features)
            return _DeviceSae(sae.layer, t(sae.W_enc), t(sae.b_enc), t(sae.b_dec), t(thr),
                              sae.apply_b_dec_to_input)

        sae = self.saes.get_or(wire["sha256"], load)
        return MonitorState(sae, int(wire["top_k"]), bool(wire["per_token"]), prompt_tokens)

    def plan(self, rows: list[RequestRows]) -> None:
        self.fence.wait()
        idx = self.index.np
        for la, t in self._touched:
            idx[la, t] = -1
        self._touched = []
        self._active[:] = 0
        for i, r in enumerate(rows):
            st: MonitorState = r.state
            st.row = st.position = -1
            last = st.prompt_tokens - 1
            if st.per_token and r.samples:
                pos = r.position + (r.end - r.start) - 1  # the row that samples
            elif r.position <= last < r.position + (r.end - r.start):
                pos = last
            else:
                continue
            if pos < max(st.next_pos, last):
                continue  # reported before (a recompute), or not yet a scoring row
            t = r.start + pos - r.position
            la = st.sae.layer
            idx[la, t] = i
            self._touched.append((la, t))
            self._active[la] += 1
            st.row, st.position = i, pos
            st.next_pos = pos + 1
        self.index.upload(self.ctx.num_layers)
        self.fence.record()

    def on_layer(self, layer: int, hidden: torch.Tensor, residual: torch.Tensor | None
                 ) -> None:
        if self.ctx.eager and not int(self.active[layer]):
            return
        torch.ops.vsteer.capture_rows(hidden, residual, self.index.device, self.stage,
                                      self.active, layer)

    def collect(self, rows: RequestRows) -> dict[str, Any] | None:
        st: MonitorState = rows.state
        if st.row < 0:
            return None
        act = st.sae.encode(self.stage[st.row: st.row + 1])[0]  # [F], after the step
        values, features = torch.topk(act, st.top_k)
        return {"position": st.position, "features": features.cpu().tolist(),
                "activations": [round(float(v), 6) for v in values.cpu()]}
