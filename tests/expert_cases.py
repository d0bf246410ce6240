"""Random routing cases for the expert-routing kernels (tests and the interpreter
tests share them): a batch of tokens, some without a route slot, route slots with
experts switched off and forced at a few layers, and the router's own top-k."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class RoutingCase:
    logits: torch.Tensor  # [T, E]
    weights: torch.Tensor  # [T, K] float32
    ids: torch.Tensor  # [T, K] int32
    token_slot: torch.Tensor  # [T + 3] int32 (longer than T, as a step table is)
    route: torch.Tensor  # [S, L, E] float32
    layer: int


def routing_case(seed: int, T: int, E: int, K: int, S: int = 4, L: int = 3,
                 dtype: torch.dtype = torch.float32, ties: bool = False) -> RoutingCase:
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(T, E, generator=g).to(dtype)
    w, ids = torch.softmax(logits.float(), -1).topk(K, dim=-1)
    if ties:  # equal weights: the free choices' order falls back to their position
        w = torch.full_like(w, 1.0 / K)
    route = torch.zeros(S, L, E)
    for s in range(S):
        for la in range(L):
            perm = torch.randperm(E, generator=g)
            n_off = int(torch.randint(0, E - K + 1, (1,), generator=g))
            n_force = int(torch.randint(0, K + 1, (1,), generator=g))
            route[s, la, perm[:n_off]] = -1.0
            route[s, la, perm[n_off:n_off + n_force]] = torch.rand(n_force, generator=g) + 0.05
    token_slot = torch.randint(-1, S, (T + 3,), generator=g, dtype=torch.int32)
    token_slot[T:] = 0  # beyond the batch: never read
    return RoutingCase(logits, w.float(), ids.to(torch.int32), token_slot, route,
                       int(torch.randint(0, L, (1,), generator=g)))
