"""`torch.ops.vsteer.expert_mask` / `.expert_force`: the `experts` control's edits at a
MoE layer's router, before and after it picks each token's experts (Semantics:
kernels/expert_route_reference.py). Out of place: the router's own tensors are left as
they were. CPU runs the vectorized torch twin, and skips it when `active[0]` (a
host-side count of this step's controlled rows) is 0; CUDA always runs the Triton
kernels (graph-safe: they read only device tables), or the torch twin without triton."""

from __future__ import annotations

import logging

import torch

from vsteer.kernels.expert_route_torch import (
    expert_count_torch,
    expert_force_torch,
    expert_mask_torch,
)
from vsteer.kernels.library import LIB

log = logging.getLogger("vsteer.kernels")

LIB.define("expert_mask(Tensor logits, Tensor token_slot, Tensor route, Tensor active, "
           "int layer) -> Tensor")
LIB.define("expert_force(Tensor weights, Tensor ids, Tensor token_slot, Tensor route, "
           "Tensor(a!) counts, Tensor active, int layer) -> (Tensor, Tensor)")


def _cuda_backend():
    try:
        from vsteer.kernels.expert_route_triton import expert_force_triton, expert_mask_triton
    except ImportError as e:
        log.info("vsteer: Triton expert kernels unavailable (%s): torch twin on CUDA", e)
        return "torch", expert_mask_torch, expert_force_torch
    return "triton", expert_mask_triton, expert_force_triton


CUDA_BACKEND, _MASK_CUDA, _FORCE_CUDA = _cuda_backend()


def _mask_cpu(logits, token_slot, route, active, layer):
    if int(active[0]) == 0:
        return logits.clone()
    return expert_mask_torch(logits, token_slot, route, layer)


def _force_cpu(weights, ids, token_slot, route, counts, active, layer):
    if int(active[0]) == 0:
        return weights.clone(), ids.clone()
    if not bool((route[:, layer] > 0).any()):  # no request forces an expert here
        return expert_count_torch(weights, ids, token_slot, route, counts, layer)
    return expert_force_torch(weights, ids, token_slot, route, counts, layer)


def _mask_cuda(logits, token_slot, route, active, layer):
    return _MASK_CUDA(logits, token_slot, route, layer)


def _force_cuda(weights, ids, token_slot, route, counts, active, layer):
    return _FORCE_CUDA(weights, ids, token_slot, route, counts, layer)


def _mask_fake(logits, token_slot, route, active, layer):
    return torch.empty_like(logits)


def _force_fake(weights, ids, token_slot, route, counts, active, layer):
    return torch.empty_like(weights), torch.empty_like(ids)


LIB.impl("expert_mask", _mask_cpu, "CPU")
LIB.impl("expert_force", _force_cpu, "CPU")
LIB.impl("expert_mask", _mask_cuda, "CUDA")  # not run here: no GPU was lent
LIB.impl("expert_force", _force_cuda, "CUDA")
torch.library.register_fake("vsteer::expert_mask", _mask_fake, lib=LIB)
torch.library.register_fake("vsteer::expert_force", _force_fake, lib=LIB)
