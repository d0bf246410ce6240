"""CPU implementation of `score_jobs`, checked against `score_jobs_reference`.

Last-token jobs without a force (per-token scores, annotate-only probes: the ones a
decode step has one of per sequence) are scored together: one gather, one batched dot.
The rest (mean pooling, jobs that may write a force; a few per request, once) run the
reference on their rows.

Semantics: identical to jobs_reference.py.
"""

from __future__ import annotations

import torch

from vsteer.kernels.jobs_reference import (
    BIAS,
    END,
    KIND,
    KIND_COS,
    LAYER,
    POOL,
    POOL_LAST,
    TARGET,
    THRESHOLD,
    WEIGHT_ROW,
    score_jobs_reference,
)


def score_jobs_cpu(
    hidden: torch.Tensor,  # [T, H]
    residual: torch.Tensor | None,  # [T, H] or None
    jobs_i: torch.Tensor,  # [J, NI] int32
    jobs_f: torch.Tensor,  # [J, NF] float32
    coeff: torch.Tensor,  # [J, L] float32
    layer_index: torch.Tensor,  # [L + 1 + J] int32 (not read: scanning J rows is cheaper)
    weights: torch.Tensor,  # [W, H] float32
    acc: torch.Tensor,  # [A, H] float32, written
    vectors: torch.Tensor,  # [S, L, H], written
    inv_norms: torch.Tensor,  # [S, L] float32, written
    out: torch.Tensor,  # [J, 2] float32, written
    layer: int,
) -> bool:
    here = jobs_i[:, LAYER] == layer  # [J]
    if not bool(here.any()):
        return False
    batched = here & (jobs_i[:, POOL] == POOL_LAST) & (jobs_i[:, TARGET] < 0)
    idx = batched.nonzero().squeeze(1)  # [n]
    if idx.numel():
        t = jobs_i[idx, END].long() - 1  # [n] each job's token row
        x = hidden[t].float()  # [n, H]
        if residual is not None:
            x = x + residual[t].float()
        dot = (x * weights[jobs_i[idx, WEIGHT_ROW].long()]).sum(-1)  # [n]
        score = torch.where(jobs_i[idx, KIND] == KIND_COS,
                            dot / x.norm(dim=-1).clamp_min(1e-12),
                            torch.sigmoid(dot + jobs_f[idx, BIAS]))
        out[idx, 0] = score
        out[idx, 1] = (score >= jobs_f[idx, THRESHOLD]).float()
    rest = (here & ~batched).nonzero().squeeze(1)
    if not rest.numel():
        return False
    sub_out = out[rest]  # a copy: written back below
    forced = score_jobs_reference(hidden, residual, jobs_i[rest], jobs_f[rest], coeff[rest],
                                  layer_index, weights, acc, vectors, inv_norms, sub_out,
                                  layer)
    out[rest] = sub_out
    return forced
