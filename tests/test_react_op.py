"""`vsteer::react_apply` (kernels/react_op.py): the graph-safe path against the
reference over several steps (streaks, the latch, the firing position), and the action
boundary: after firing at row position p, position p is steered only at layers above
the condition's layer and later positions at every layer; release is the complement."""

from __future__ import annotations

import torch

from vsteer.kernels.react_op import (
    KIND_COSINE,
    KIND_FEATURE,
    KIND_SIGMOID,
    MODE_RELEASE,
    MODE_STEER,
    MODE_STOP,
    react_apply_graph_safe,
    react_apply_reference,
)

R, H, L, V = 4, 8, 4, 2


def slots(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return dict(
        cond_w=torch.randn(R, H, generator=g), cond_b=torch.randn(R, generator=g) * 0.1,
        cond_b2=torch.tensor([0.0, 0.0, 0.2, 0.0]),
        cond_kind=torch.tensor([KIND_SIGMOID, KIND_COSINE, KIND_FEATURE, KIND_SIGMOID],
                               dtype=torch.int32),
        cond_thr=torch.tensor([0.5, 0.0, 0.1, 2.0]),  # slot 3 never fires
        cond_layer=torch.tensor([1, 2, 1, 1]),
        min_tokens=torch.tensor([1, 2, 1, 1], dtype=torch.int32),
        mode=torch.tensor([MODE_STEER, MODE_RELEASE, MODE_STOP, MODE_STEER],
                          dtype=torch.int32),
        vec_of=torch.tensor([0, 1, 0, 1], dtype=torch.int32),
        scale=torch.tensor([2.0, -1.5, 0.0, 3.0]),
        vectors=torch.randn(V, L, H, generator=g))


def state():
    return dict(streak=torch.zeros(R, dtype=torch.int32), fired=torch.zeros(R, dtype=torch.int32),
                fired_pos=torch.zeros(R, dtype=torch.int32), score_out=torch.zeros(R))


ORDER = ["eval_row", "token_slot", "token_pos", "cond_w", "cond_b", "cond_b2", "cond_kind",
         "cond_thr", "cond_layer", "min_tokens", "streak", "fired", "fired_pos", "score_out",
         "mode", "vec_of", "scale", "vectors"]


def run(fn, hidden, residual, tables, st, layer, reference):
    args = [({**tables, **st})[k] for k in ORDER]
    if reference:
        fn(hidden, residual, *args, torch.ones(1, dtype=torch.int64), layer)
    else:
        fn(hidden, residual, *args, layer)


def test_the_graph_safe_path_equals_the_reference_over_decode_steps():
    """Four requests decoding one token each for 6 steps, then one recompute chunk."""
    t = slots()
    g = torch.Generator().manual_seed(5)
    st_ref, st_fast = state(), state()
    for step in range(7):
        if step < 6:  # rows 0..3: one decode token each, at positions 10 + step
            T = 4
            token_slot = torch.arange(4, dtype=torch.int32)
            token_pos = torch.full((4,), 10 + step, dtype=torch.int32)
            eval_row = torch.arange(4, dtype=torch.int32)
        else:  # request 0 recomputes positions 10..15 (preempted), samples at the last
            T = 6
            token_slot = torch.zeros(6, dtype=torch.int32)
            token_pos = torch.arange(10, 16, dtype=torch.int32)
            eval_row = torch.tensor([5, -1, -1, -1], dtype=torch.int32)
        per_step = dict(eval_row=eval_row, token_slot=token_slot, token_pos=token_pos)
        hidden = torch.randn(T, H, generator=g) + 0.5
        residual = torch.randn(T, H, generator=g)
        a, b = hidden.clone(), hidden.clone()
        for layer in range(L):
            run(react_apply_reference, a, residual, {**t, **per_step}, st_ref, layer, True)
            run(react_apply_graph_safe, b, residual, {**t, **per_step}, st_fast, layer, False)
        assert torch.allclose(a, b, atol=1e-5), step
        for k in st_ref:
            assert torch.allclose(st_ref[k].float(), st_fast[k].float(), atol=1e-5), (step, k)
    assert st_ref["fired"][3] == 0  # the threshold no score reaches


def test_the_action_starts_at_the_firing_row_after_the_condition_layer():
    """Slot 0 fires at the row at position 7 (min_tokens 1, condition at layer 1):
    position 7 is steered at layers 2 and 3, position 8 at every layer; release (slot 1
    with its condition at layer 1 here) is the complement."""
    t = slots()
    t["cond_thr"] = torch.tensor([-1.0, -2.0, 9.0, 9.0])  # 0 and 1 fire at once
    t["cond_kind"] = torch.tensor([KIND_SIGMOID, KIND_COSINE, 0, 0], dtype=torch.int32)
    t["cond_layer"] = torch.tensor([1, 1, 1, 1])
    t["min_tokens"] = torch.ones(R, dtype=torch.int32)
    for mode in (MODE_STEER, MODE_RELEASE):
        slot = 0 if mode == MODE_STEER else 1
        st = state()
        # one chunk: rows at positions 6, 7 of the request; the row at 7 samples
        per = dict(eval_row=torch.tensor([1 if r == slot else -1 for r in range(R)],
                                         dtype=torch.int32),
                   token_slot=torch.full((2,), slot, dtype=torch.int32),
                   token_pos=torch.tensor([6, 7], dtype=torch.int32))
        hidden = torch.zeros(2, H)
        moved = []
        for layer in range(L):
            before = hidden.clone()
            run(react_apply_graph_safe, hidden, None, {**t, **per}, st, layer, False)
            moved.append((hidden - before).abs().sum(-1).gt(0).tolist())
        assert int(st["fired"][slot]) == 1 and int(st["fired_pos"][slot]) == 7
        if mode == MODE_STEER:
            assert moved == [[False, False], [False, False], [False, True], [False, True]]
        else:
            assert moved == [[True, True], [True, True], [True, False], [True, False]]
        # the next token (position 8): steer at every layer, release at none
        per = dict(eval_row=torch.tensor([0 if r == slot else -1 for r in range(R)],
                                         dtype=torch.int32),
                   token_slot=torch.full((1,), slot, dtype=torch.int32),
                   token_pos=torch.tensor([8], dtype=torch.int32))
        hidden = torch.zeros(1, H)
        run(react_apply_graph_safe, hidden, None, {**t, **per}, st, 3, False)
        assert bool(hidden.abs().sum() > 0) == (mode == MODE_STEER)


def test_min_tokens_needs_consecutive_hits():
    t = slots()
    t["cond_kind"] = torch.full((R,), KIND_COSINE, dtype=torch.int32)
    t["cond_w"] = torch.zeros(R, H)
    t["cond_w"][:, 0] = 1.0
    t["cond_thr"] = torch.full((R,), 0.5)
    t["cond_layer"] = torch.zeros(R, dtype=torch.int64)
    t["min_tokens"] = torch.full((R,), 2, dtype=torch.int32)
    st = state()
    hits = [True, False, True, True, True]
    fired_at = None
    for i, hit in enumerate(hits):
        x = torch.zeros(1, H)
        x[0, 0 if hit else 1] = 1.0
        per = dict(eval_row=torch.tensor([0, -1, -1, -1], dtype=torch.int32),
                   token_slot=torch.full((1,), 0, dtype=torch.int32),
                   token_pos=torch.tensor([20 + i], dtype=torch.int32))
        run(react_apply_graph_safe, x, None, {**t, **per}, st, 0, False)
        if fired_at is None and int(st["fired"][0]):
            fired_at = i
    assert fired_at == 3 and int(st["fired_pos"][0]) == 23
