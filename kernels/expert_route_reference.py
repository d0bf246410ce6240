"""Plain-torch reference of the expert-routing edits (the oracle of `expert_route_torch`
and `expert_route_triton`): the `experts` control at one MoE layer's router.

A request that controls experts owns a route slot s; route[s, l, e] says what happens
to expert e at layer l for that request's tokens: 0 nothing, OFF (-1) never routed
there, w > 0 forced there with routing weight w. token_slot[t] is token t's route slot
(-1: no control, the token is untouched bit for bit).

Semantics of `expert_mask`, before the router picks (logits [T, E]):
    for t with s = token_slot[t] >= 0:
        for e with route[s, layer, e] < 0: logits[t, e] = -inf
So an expert switched off is never among a token's choices: the router picks its k
from the rest, as if the expert did not exist (softmax routers also leave it out of
the normaliser).

Semantics of `expert_force`, after the router picked (weights [T, K] fp32, ids [T, K]):
    for t with s = token_slot[t] >= 0:
        forced  = [e for e in range(E) if route[s, layer, e] > 0]         # ascending
        for j with ids[t, j] in forced: weights[t, j] = route[s, layer, ids[t, j]]
        missing = [e for e in forced if e not in ids[t]]                  # ascending
        free    = [j with ids[t, j] not in forced], by (weights[t, j], j) ascending
        for i, e in enumerate(missing):
            ids[t, free[i]] = e; weights[t, free[i]] = route[s, layer, e]
        for j: counts[s, layer, ids[t, j]] += 1          # where the request's tokens went
A forced expert takes the place of the token's weakest choice that is not forced; the
other choices keep the weights the router gave them. The server guarantees at most K
forced and at least K not switched off per (request, layer), and none both.
"""

from __future__ import annotations

import torch

OFF = -1.0  # route value of an expert switched off


def expert_mask_reference(
    logits: torch.Tensor,  # [T, E] router logits (any float dtype)
    token_slot: torch.Tensor,  # [>=T] int32, -1 = untouched
    route: torch.Tensor,  # [S, L, E] float32
    layer: int,
) -> torch.Tensor:
    out = logits.clone()
    for t in range(logits.shape[0]):
        s = int(token_slot[t])
        if s < 0:
            continue
        for e in range(logits.shape[1]):
            if float(route[s, layer, e]) < 0:
                out[t, e] = float("-inf")
    return out


def expert_force_reference(
    weights: torch.Tensor,  # [T, K] float32 routing weights
    ids: torch.Tensor,  # [T, K] int32 / int64 expert ids
    token_slot: torch.Tensor,  # [>=T] int32
    route: torch.Tensor,  # [S, L, E] float32
    counts: torch.Tensor,  # [S, L, E] int32, accumulated in place
    layer: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    w_out, ids_out = weights.clone(), ids.clone()
    E = route.shape[2]
    for t in range(weights.shape[0]):
        s = int(token_slot[t])
        if s < 0:
            continue
        r = route[s, layer]
        row = [int(i) for i in ids[t]]
        forced = [e for e in range(E) if float(r[e]) > 0]
        for j, e in enumerate(row):
            if e in forced:
                w_out[t, j] = r[e]
        missing = [e for e in forced if e not in row]
        free = sorted((j for j, e in enumerate(row) if e not in forced),
                      key=lambda j: (float(weights[t, j]), j))
        for i, e in enumerate(missing):
            ids_out[t, free[i]] = e
            w_out[t, free[i]] = r[e]
        for e in ids_out[t]:
            counts[s, layer, int(e)] += 1
    return w_out, ids_out
