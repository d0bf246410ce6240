"""Triton kernels of the expert-routing edits, twins of expert_route_reference.py
(Semantics: there). One program per token row; launch parameters depend on shapes only
(E, K), never on table contents, so a captured CUDA graph replays them as the tables
change. A row without a route slot costs one load (mask: and a copy of its logits)."""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _expert_mask_kernel(
    logits_ptr, out_ptr, token_slot_ptr, route_ptr, layer, num_layers, num_experts,
    stride_logits, BLOCK_E: tl.constexpr,
):
    t = tl.program_id(0).to(tl.int64)
    e = tl.arange(0, BLOCK_E)
    em = e < num_experts
    x = tl.load(logits_ptr + t * stride_logits + e, mask=em)  # [BLOCK_E]
    s = tl.load(token_slot_ptr + t)
    if s >= 0:
        r = tl.load(route_ptr + (s.to(tl.int64) * num_layers + layer) * num_experts + e,
                    mask=em, other=0.0)
        x = tl.where(r < 0, float("-inf"), x)
    tl.store(out_ptr + t * num_experts + e, x, mask=em)


@triton.jit
def _expert_force_kernel(
    weights_ptr, ids_ptr, token_slot_ptr, route_ptr, counts_ptr, layer, num_layers,
    num_experts, top_k, BLOCK_K: tl.constexpr, BLOCK_E: tl.constexpr,
):
    # weights [T, K] fp32 and ids [T, K] are this call's own copies, edited in place
    t = tl.program_id(0).to(tl.int64)
    s = tl.load(token_slot_ptr + t)
    if s >= 0:
        j = tl.arange(0, BLOCK_K)
        km = j < top_k
        e = tl.arange(0, BLOCK_E)
        em = e < num_experts
        base = (s.to(tl.int64) * num_layers + layer) * num_experts
        ids = tl.load(ids_ptr + t * top_k + j, mask=km, other=-1)  # [BK]
        w = tl.load(weights_ptr + t * top_k + j, mask=km, other=0.0)  # [BK]
        r = tl.load(route_ptr + base + e, mask=em, other=0.0)  # [BE]
        forced = (r > 0) & em
        r_at = tl.load(route_ptr + base + ids, mask=km, other=0.0)  # [BK]
        present = (r_at > 0) & km
        in_ids = tl.sum((ids[:, None] == e[None, :]).to(tl.int32), axis=0) > 0  # [BE]
        missing = forced & (in_ids == 0)
        m_rank = tl.cumsum(missing.to(tl.int32), axis=0) - 1  # [BE]: rank among missing
        free = km & (present == 0)  # [BK]
        # rank of free choice j among the free ones, weakest first (ties: lower j)
        before = free[None, :] & ((w[None, :] < w[:, None])
                                  | ((w[None, :] == w[:, None]) & (j[None, :] < j[:, None])))
        f_rank = tl.sum(before.to(tl.int32), axis=1)  # [BK]
        match = (missing[None, :] & (m_rank[None, :] == f_rank[:, None])
                 & free[:, None])  # [BK, BE]: choice j takes missing expert e
        takes = tl.sum(match.to(tl.int32), axis=1) > 0
        new_e = tl.sum(tl.where(match, e[None, :], 0), axis=1)  # [BK]
        new_w = tl.sum(tl.where(match, r[None, :], 0.0), axis=1)
        ids = tl.where(takes, new_e.to(ids.dtype), ids)
        w = tl.where(present, r_at, tl.where(takes, new_w, w))
        tl.store(ids_ptr + t * top_k + j, ids, mask=km)
        tl.store(weights_ptr + t * top_k + j, w, mask=km)
        tl.atomic_add(counts_ptr + base + ids, 1, mask=km)


def launch_config(num_experts: int, top_k: int) -> dict:
    """Constexprs and num_warps of a launch (tests/test_triton_compile.py compiles these)."""
    return dict(BLOCK_K=max(2, triton.next_power_of_2(top_k)),
                BLOCK_E=max(16, triton.next_power_of_2(num_experts)),
                num_warps=1 if num_experts <= 128 else 4)


def expert_mask_triton(logits: torch.Tensor, token_slot: torch.Tensor, route: torch.Tensor,
                       layer: int) -> torch.Tensor:
    T, E = logits.shape
    out = torch.empty((T, E), dtype=logits.dtype, device=logits.device)
    if T:
        cfg = launch_config(E, 1)
        _expert_mask_kernel[(T,)](logits, out, token_slot, route, layer, route.shape[1], E,
                                  logits.stride(0), BLOCK_E=cfg["BLOCK_E"],
                                  num_warps=cfg["num_warps"])
    return out


def expert_force_triton(weights: torch.Tensor, ids: torch.Tensor, token_slot: torch.Tensor,
                        route: torch.Tensor, counts: torch.Tensor, layer: int
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    T, K = ids.shape
    w = weights.float().contiguous().clone()  # [T, K] fp32, this call's own copy
    i = ids.contiguous().clone()
    if T:
        cfg = launch_config(route.shape[2], K)
        _expert_force_kernel[(T,)](w, i, token_slot, route, counts, layer, route.shape[1],
                                   route.shape[2], K, BLOCK_K=cfg["BLOCK_K"],
                                   BLOCK_E=cfg["BLOCK_E"], num_warps=cfg["num_warps"])
    return w.to(weights.dtype), i
