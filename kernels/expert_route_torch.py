"""The expert-routing edits in vectorized torch, twin of expert_route_reference.py
(Semantics: there). Graph-safe: no host branch, no data-dependent shape, no read-back,
so CPU engines run it and a CUDA graph could replay it (CUDA runs the Triton kernels,
expert_route_triton.py, when triton imports)."""

from __future__ import annotations

import torch


def _route_rows(token_slot: torch.Tensor, route: torch.Tensor, layer: int, T: int
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    slot = token_slot[:T].long()  # [T]
    on = slot >= 0  # [T]
    s = slot.clamp_min(0)
    return on, s, route[s, layer]  # [T], [T], [T, E]


def expert_mask_torch(logits: torch.Tensor, token_slot: torch.Tensor, route: torch.Tensor,
                      layer: int) -> torch.Tensor:
    on, _, r = _route_rows(token_slot, route, layer, logits.shape[0])
    return logits.masked_fill((r < 0) & on[:, None], float("-inf"))  # [T, E]


def count_routed(ids: torch.Tensor, on: torch.Tensor, s: torch.Tensor, counts: torch.Tensor,
                 layer: int) -> None:
    """counts[s[t], layer, ids[t, j]] += 1 for tokens t with on[t]."""
    T, K = ids.shape
    _, L, E = counts.shape
    flat = (s[:, None] * L + layer) * E + ids.long()  # [T, K] into counts.view(-1)
    counts.view(-1).scatter_add_(0, flat.reshape(-1),
                                 on[:, None].expand(T, K).reshape(-1).to(counts.dtype))


def expert_count_torch(weights: torch.Tensor, ids: torch.Tensor, token_slot: torch.Tensor,
                       route: torch.Tensor, counts: torch.Tensor, layer: int
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """expert_force where no route slot forces an expert at `layer`: only the counts."""
    slot = token_slot[: ids.shape[0]].long()
    count_routed(ids, slot >= 0, slot.clamp_min(0), counts, layer)
    return weights.clone(), ids.clone()


def expert_force_torch(weights: torch.Tensor, ids: torch.Tensor, token_slot: torch.Tensor,
                       route: torch.Tensor, counts: torch.Tensor, layer: int
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    T, K = ids.shape
    S, L, E = route.shape
    on, s, r = _route_rows(token_slot, route, layer, T)  # r [T, E]
    idl = ids.long()  # [T, K]
    forced = (r > 0) & on[:, None]  # [T, E]
    r_at = r.gather(1, idl)  # [T, K]
    present = forced.gather(1, idl)  # [T, K]: choice j holds a forced expert
    in_ids = torch.zeros_like(forced).scatter(1, idl, True)  # [T, E]
    missing = forced & ~in_ids  # [T, E]
    # the K lowest-numbered missing experts, ascending (at most K are forced)
    order = torch.arange(E, 0, -1, device=r.device, dtype=torch.float32)  # E..1
    key, miss_e = (missing.float() * order).topk(K, dim=1)  # [T, K]
    miss_ok = key > 0
    # each free choice's rank among the free ones, weakest first (ties: lower j first)
    free = ~present  # [T, K]
    w = weights.float()
    j = torch.arange(K, device=r.device)
    before = (w[:, None, :] < w[:, :, None]) | (
        (w[:, None, :] == w[:, :, None]) & (j[None, None, :] < j[None, :, None]))  # [T, j, i]
    rank = (before & free[:, None, :]).sum(-1).clamp(max=K - 1)  # [T, K]
    takes = free & miss_ok.gather(1, rank)  # [T, K]: choice j gets a missing expert
    new_e = miss_e.gather(1, rank)  # [T, K]
    ids_out = torch.where(takes, new_e, idl)
    w_out = torch.where(present, r_at, torch.where(takes, r.gather(1, new_e), w))
    count_routed(ids_out, on, s, counts, layer)
    return w_out.to(weights.dtype), ids_out.to(ids.dtype)
