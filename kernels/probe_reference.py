"""Plain-torch reference of probe scoring (the oracle for the Triton kernel).

Semantics (x[t] = hidden[t] + residual[t], w: [H], b: bias):
    POOL_MEAN:  for each segment i (tokens cu[i] .. cu[i+1]-1, non-empty):
                    out[i] = sigmoid(mean_t(x[t]) · w + b)
    POOL_LAST:      out[i] = sigmoid(x[cu[i+1] - 1] · w + b)
    PER_TOKEN:  for each token t:   out[t] = sigmoid(x[t] · w + b)
Arithmetic is fp32; `out` is fp32.
"""

from __future__ import annotations

import torch

POOL_MEAN = 0
POOL_LAST = 1
PER_TOKEN = 2


def probe_score_reference(
    hidden: torch.Tensor,  # [T, H]
    residual: torch.Tensor | None,  # [T, H] or None
    cu_seqlens: torch.Tensor,  # [B+1] int32 segment offsets (unused for PER_TOKEN)
    weight: torch.Tensor,  # [H]
    bias: float,
    pooling: int,
    out: torch.Tensor,  # [B] (pooled) or [T] (per token) float32, written
) -> None:
    x = hidden.float() if residual is None else hidden.float() + residual.float()  # [T, H]
    w = weight.float()
    if pooling == PER_TOKEN:
        out.copy_(torch.sigmoid(x @ w + bias))
        return
    cu = cu_seqlens.tolist()
    for i in range(len(cu) - 1):
        seg = x[cu[i] : cu[i + 1]]  # [n, H]
        pooled = seg.mean(dim=0) if pooling == POOL_MEAN else seg[-1]
        out[i] = torch.sigmoid(pooled @ w + bias)
