"""Plain-torch reference of exit confidence (the oracle for the Triton kernel).

Semantics, per token t with logits z[t] over the vocabulary (fp32):
    p = softmax(z[t])
    out[t, 0] = max(p)                  # confidence
    out[t, 1] = top1(p) - top2(p)       # margin
    out[t, 2] = -Σ p log p              # entropy (nats), 0·log 0 = 0
The reference materializes p; the kernel never does (online softmax).
"""

from __future__ import annotations

import torch

CONFIDENCE, MARGIN, ENTROPY = 0, 1, 2


def exit_confidence_reference(logits: torch.Tensor, out: torch.Tensor) -> None:
    """logits: [T, V]; out: [T, 3] float32, written."""
    z = logits.float()
    p = torch.softmax(z, dim=-1)  # [T, V]
    top = torch.topk(p, k=min(2, p.shape[-1]), dim=-1).values  # [T, 2]
    out[:, CONFIDENCE] = top[:, 0]
    out[:, MARGIN] = top[:, 0] - top[:, 1] if top.shape[-1] > 1 else top[:, 0]
    logp = torch.log_softmax(z, dim=-1)
    out[:, ENTROPY] = -(torch.where(p > 0, p * logp, torch.zeros_like(p))).sum(dim=-1)
