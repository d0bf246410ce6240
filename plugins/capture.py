"""Hidden-state capture for offline tooling (extraction), through the same hook site.

Captures the residual stream (hidden + residual) after the requested layers at every
prompt token, and sends it on the channel once the request's prompt is complete.
Runs as plain Python inside the layer hook, so it requires an eager engine; the
runtime refuses to start capture under torch.compile.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from vsteer.plugins.channel import WorkerChannel


@dataclass
class _Capture:
    rid: str
    layers: list[int]
    data: np.ndarray  # [P, Lc, H] float32
    filled: int = 0


class CaptureCollector:
    def __init__(self, channel: WorkerChannel, hidden_size: int) -> None:
        self.channel = channel
        self.hidden_size = hidden_size
        self.pending: dict[str, _Capture] = {}
        self.step: list[tuple[_Capture, int, int, int]] = []  # (capture, tok a, tok b, pos)

    def plan(self, rid: str, layers: list[int], num_prompt: int, a: int, b: int,
             pos: int) -> None:
        if b <= a:
            return
        cap = self.pending.get(rid)
        if cap is None:
            data = np.zeros((num_prompt, len(layers), self.hidden_size), np.float32)
            cap = self.pending[rid] = _Capture(rid, list(layers), data)
        self.step.append((cap, a, b, pos))

    def on_layer(self, layer: int, hidden: torch.Tensor, residual: torch.Tensor) -> None:
        for cap, a, b, pos in self.step:
            if layer in cap.layers:
                x = hidden[a:b].float() + residual[a:b].float()  # [n, H]
                cap.data[pos : pos + b - a, cap.layers.index(layer)] = x.cpu().numpy()

    def finish_step(self) -> None:
        for cap, a, b, _ in self.step:
            cap.filled += b - a
            if cap.filled >= cap.data.shape[0] and cap.rid in self.pending:
                del self.pending[cap.rid]
                self.channel.send({"type": "capture", "rid": cap.rid, "layers": cap.layers,
                                   "shape": list(cap.data.shape), "data": cap.data.tobytes()})
        self.step.clear()

    def forget(self, rid: str) -> None:
        self.pending.pop(rid, None)
