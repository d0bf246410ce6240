"""The expert-routing edits (kernels/expert_route_reference.py: Semantics): the
vectorized torch twin and the registered ops equal the reference on random cases; a
token without a route slot is untouched bit for bit; the counts say where each
controlled token went."""

from __future__ import annotations

import pytest
import torch

import vsteer.kernels  # noqa: F401  (registers the ops)
from vsteer.kernels.expert_route_reference import expert_force_reference, expert_mask_reference
from vsteer.kernels.expert_route_torch import expert_force_torch, expert_mask_torch

from expert_cases import routing_case

SHAPES = [(1, 4, 2), (9, 8, 2), (40, 16, 4), (17, 64, 8), (5, 128, 8), (3, 60, 6)]


@pytest.mark.parametrize("ties", [False, True], ids=["weights", "ties"])
@pytest.mark.parametrize("T,E,K", SHAPES)
def test_torch_twin_equals_reference(T, E, K, ties):
    for seed in range(4):
        c = routing_case(seed, T, E, K, ties=ties)
        torch.testing.assert_close(expert_mask_torch(c.logits, c.token_slot, c.route, c.layer),
                                   expert_mask_reference(c.logits, c.token_slot, c.route,
                                                         c.layer), rtol=0, atol=0)
        n_ref, n_got = (torch.zeros(c.route.shape, dtype=torch.int32) for _ in range(2))
        w_ref, i_ref = expert_force_reference(c.weights, c.ids, c.token_slot, c.route, n_ref,
                                              c.layer)
        w_got, i_got = expert_force_torch(c.weights, c.ids, c.token_slot, c.route, n_got,
                                          c.layer)
        assert torch.equal(i_got, i_ref) and i_got.dtype == c.ids.dtype
        torch.testing.assert_close(w_got, w_ref, rtol=0, atol=0)
        assert torch.equal(n_got, n_ref)


def test_the_reference_does_what_it_says():
    """One hand-made token: expert 3 off, expert 5 forced at 0.7, expert 1 forced at
    0.2 (already chosen); the weakest unforced choice makes room for 5."""
    route = torch.zeros(1, 1, 8)
    route[0, 0, 3], route[0, 0, 5], route[0, 0, 1] = -1.0, 0.7, 0.2
    slot = torch.tensor([0, -1], dtype=torch.int32)
    logits = torch.tensor([[0.0, 2.0, 0.0, 9.0, 0.0, 0.0, 1.0, 0.5], [0.0] * 8])
    masked = expert_mask_reference(logits, slot, route, 0)
    assert masked[0, 3] == float("-inf") and torch.equal(masked[1], logits[1])
    w = torch.tensor([[0.5, 0.3, 0.2], [0.4, 0.3, 0.3]])
    ids = torch.tensor([[1, 6, 7], [3, 6, 7]], dtype=torch.int32)
    counts = torch.zeros(1, 1, 8, dtype=torch.int32)
    w2, ids2 = expert_force_reference(w, ids, slot, route, counts, 0)
    assert ids2[0].tolist() == [1, 6, 5] and w2[0].tolist() == pytest.approx([0.2, 0.3, 0.7])
    assert torch.equal(ids2[1], ids[1]) and torch.equal(w2[1], w[1])
    assert counts[0, 0].tolist() == [0, 1, 0, 0, 0, 1, 1, 0]


def test_the_ops_equal_the_reference_and_skip_idle_steps():
    c = routing_case(7, 33, 16, 4)
    active = torch.ones(1, dtype=torch.int64)
    counts = torch.zeros(c.route.shape, dtype=torch.int32)
    got = torch.ops.vsteer.expert_mask(c.logits, c.token_slot, c.route, active, c.layer)
    assert torch.equal(got, expert_mask_reference(c.logits, c.token_slot, c.route, c.layer))
    w, ids = torch.ops.vsteer.expert_force(c.weights, c.ids, c.token_slot, c.route, counts,
                                           active, c.layer)
    n_ref = torch.zeros_like(counts)
    w_ref, i_ref = expert_force_reference(c.weights, c.ids, c.token_slot, c.route, n_ref,
                                          c.layer)
    assert torch.equal(ids, i_ref) and torch.equal(w, w_ref) and torch.equal(counts, n_ref)
    assert int(counts.sum()) == int((c.token_slot[:33] >= 0).sum()) * 4
    # an idle step (active 0): nothing changes, nothing is counted
    idle = torch.zeros(1, dtype=torch.int64)
    assert torch.equal(torch.ops.vsteer.expert_mask(c.logits, c.token_slot, c.route, idle,
                                                    c.layer), c.logits)
    w0, i0 = torch.ops.vsteer.expert_force(c.weights, c.ids, c.token_slot, c.route, counts,
                                           idle, c.layer)
    assert torch.equal(w0, c.weights) and torch.equal(i0, c.ids)
    assert torch.equal(counts, n_ref)


def test_off_experts_are_never_chosen_after_the_mask():
    """The router's own top-k after the mask never picks an expert switched off."""
    c = routing_case(3, 64, 16, 2)
    masked = expert_mask_torch(c.logits, c.token_slot, c.route, c.layer)
    picked = torch.softmax(masked, -1).topk(2, dim=-1).indices
    for t in range(64):
        s = int(c.token_slot[t])
        if s >= 0:
            off = set(torch.nonzero(c.route[s, c.layer] < 0).flatten().tolist())
            assert not off & set(picked[t].tolist())


def test_the_op_without_forced_experts_only_counts():
    """No route slot forces an expert at the layer: the op's cheaper path (mask, pick,
    count) still equals the reference."""
    c = routing_case(11, 40, 16, 4)
    c.route.clamp_(max=0.0)  # off entries only
    active = torch.ones(1, dtype=torch.int64)
    counts, n_ref = (torch.zeros(c.route.shape, dtype=torch.int32) for _ in range(2))
    w, ids = torch.ops.vsteer.expert_force(c.weights, c.ids, c.token_slot, c.route, counts,
                                           active, c.layer)
    w_ref, i_ref = expert_force_reference(c.weights, c.ids, c.token_slot, c.route, n_ref,
                                          c.layer)
    assert torch.equal(ids, i_ref) and torch.equal(w, w_ref) and torch.equal(counts, n_ref)
    assert int(counts.sum()) > 0
