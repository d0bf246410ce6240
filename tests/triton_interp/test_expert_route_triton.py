"""The expert-routing Triton kernels equal the reference (TRITON_INTERPRET=1, CPU):
exactly (a mask and a re-assignment, no arithmetic but copies), on the random cases
of tests/expert_cases.py, for every logits dtype and int32 / int64 ids."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from vsteer.kernels.expert_route_reference import expert_force_reference, expert_mask_reference
from vsteer.kernels.expert_route_triton import expert_force_triton, expert_mask_triton

sys.path.insert(0, str(Path(__file__).parents[1]))
from expert_cases import routing_case  # noqa: E402

SHAPES = [(1, 4, 2), (9, 8, 2), (40, 16, 4), (17, 64, 8), (5, 256, 8), (3, 60, 6)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("T,E,K", SHAPES)
def test_expert_mask(T, E, K, dtype):
    c = routing_case(T + E, T, E, K, dtype=dtype)
    got = expert_mask_triton(c.logits, c.token_slot, c.route, c.layer)
    assert torch.equal(got, expert_mask_reference(c.logits, c.token_slot, c.route, c.layer))


@pytest.mark.parametrize("ids_dtype", [torch.int32, torch.int64], ids=str)
@pytest.mark.parametrize("ties", [False, True], ids=["weights", "ties"])
@pytest.mark.parametrize("T,E,K", SHAPES)
def test_expert_force(T, E, K, ties, ids_dtype):
    c = routing_case(T * E + K, T, E, K, ties=ties)
    ids = c.ids.to(ids_dtype)
    n_ref, n_got = (torch.zeros(c.route.shape, dtype=torch.int32) for _ in range(2))
    w_ref, i_ref = expert_force_reference(c.weights, ids, c.token_slot, c.route, n_ref, c.layer)
    w_got, i_got = expert_force_triton(c.weights, ids, c.token_slot, c.route, n_got, c.layer)
    assert torch.equal(i_got, i_ref) and i_got.dtype == ids_dtype
    assert torch.equal(w_got, w_ref)
    assert torch.equal(n_got, n_ref)
    assert torch.equal(c.ids.to(ids_dtype), ids)  # the router's own tensors: untouched
