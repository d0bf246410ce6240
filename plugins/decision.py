"""Per-request decisions made inside prefill (refusal `guard` and `controller`).

At the decision layer D (x = hidden + residual):
    guard:      cosine: score = cos(x[last prompt token], condition)
                linear: score = sigmoid(mean(x over the last `window` prompt tokens)
                                        · weight + bias)
                fire = score >= threshold;  coeff[l] = scale for l in force_layers
    controller: score, w = controller(x) (see vsteer/artifacts/controller.py)
                fire = score >= threshold;  coeff[l] = w[l]
    if fire: vectors[target, l] = coeff[l] * vectors[source, l]   for l in force_layers
The request's rows hold one `add` entry on its private `target` slot (zeros until
then), so the force takes effect at layers after D in this very forward pass, for
every token of the request from then on, and never for other requests.

A guard is a job of the device job table (plugins/job_table.py; no read-back in the
forward pass). A controller (an MLP) runs on the host, between two layers: it reads
its score back, so it is eager-only on CUDA. The `refusal` control's worker
(plugins/refusal_worker.py) plans both through the shared tables.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from vsteer.artifacts import (
    ArtifactError,
    RefusalController,
    RefusalDirection,
    read_verified,
)
from vsteer.wire import WireDecide


@dataclass
class Decision:
    wire: WireDecide
    source_slot: int
    target_slot: int
    condition: np.ndarray | None = None  # [H] guard weight (unit condition for cosine)
    weight_row: int = -1  # guard: its condition's row in the job table's weights
    linear: bool = False  # guard kind: linear (sigmoid) or cosine
    bias: float = 0.0  # linear guard
    window: int = 1  # last prompt tokens the guard pools (linear)
    acc_row: int = -1  # linear guard over a window that may span prefill chunks
    acc_n: int = 0  # window tokens accumulated so far
    controller: dict[str, torch.Tensor] = field(default_factory=dict)  # controller tensors
    w_max: float = 0.0
    done: bool = False
    score: float | None = None
    fired: bool = False


def load_decision(w: WireDecide, source_slot: int, target_slot: int,
                  device: torch.device) -> Decision:
    d = Decision(w, source_slot, target_slot)
    if w.kind == "guard":
        direction = RefusalDirection.from_safetensors_bytes(
            read_verified(w.direction_path, w.direction_sha256))
        cal = direction.calibration
        if cal is not None and cal.kind == "linear":
            if cal.condition_layer != w.layer or direction.guard_weight is None:
                raise ArtifactError("the linear guard's layer does not match the request's")
            d.condition, d.linear = direction.guard_weight, True
            d.bias, d.window = cal.bias, cal.window
        else:
            d.condition = direction.unit_condition(w.layer)
    elif w.kind == "controller":
        c = RefusalController.from_safetensors_bytes(read_verified(w.controller_path,
                                                           w.controller_sha256))
        d.controller = {k: torch.from_numpy(getattr(c, k)).to(device)
                        for k in ("w1", "b1", "w2", "b2", "mu", "sigma")}
        d.w_max = c.w_max
    else:
        raise ArtifactError(f"unknown decision kind {w.kind!r}")
    return d


def decide(d: Decision, x: torch.Tensor) -> dict[int, float]:
    """Score one stream vector x [H] (fp32) with a controller. Sets d.score / d.fired;
    returns the force coefficient per layer ({} when it does not fire). Runs once per
    request, on the host (it reads the score back), between two layers of its prefill."""
    w, c = d.wire, d.controller
    z = (x - c["mu"]) / c["sigma"]  # [H]
    o = torch.relu(z @ c["w1"] + c["b1"]) @ c["w2"] + c["b2"]  # [1 + L]
    score = float(torch.sigmoid(o[0]))
    weights = (d.w_max * torch.sigmoid(o[1:])).tolist()  # [L]
    coeff = {la: weights[la] for la in w.force_layers}
    d.score, d.fired, d.done = score, score >= w.threshold, True
    return coeff if d.fired else {}


def window_part(p: int, n: int, end: int, window: int
                ) -> tuple[int, int, bool, bool] | None:
    """The part of a guard's window (prompt positions [end - window, end)) in a chunk
    of n prompt tokens at positions p..p+n: (lo, hi, the window starts here, the
    window ends here), or None when the chunk holds none of it."""
    start = max(end - window, 0)
    lo, hi = max(p, start), min(p + n, end)
    if lo >= hi:
        return None
    return lo, hi, lo == start, hi == end
