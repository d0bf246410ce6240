"""The steering op's semantics, its custom-op wrapper, and torch.compile opacity."""

from __future__ import annotations

import itertools

import pytest
import torch

import vsteer.kernels  # noqa: F401
from vsteer.kernels.steer_cpu import steer_apply_cpu
from vsteer.kernels.steer_reference import (
    OP_ABLATE,
    OP_ADD,
    OP_ADD_NORMALIZED,
    steer_apply_reference,
)

H, L = 64, 4
_serial = itertools.count(1)
IMPLS = [steer_apply_reference, steer_apply_cpu]


def step(active: int) -> torch.Tensor:
    """A fresh (steered tokens, serial, epoch) triple: a new step with new rows."""
    serial = next(_serial)
    return torch.tensor([active, serial, serial], dtype=torch.int64)


def tables(entries_per_row, num_slots=3, seed=0):
    """Row tables from [[(slot, scale, op), ...], ...] and a random slot table."""
    g = torch.Generator().manual_seed(seed)
    k = max(len(r) for r in entries_per_row)
    row_slot = torch.zeros(len(entries_per_row), k, dtype=torch.int32)
    row_scale = torch.zeros(len(entries_per_row), k)
    row_op = torch.zeros(len(entries_per_row), k, dtype=torch.int32)
    for r, entries in enumerate(entries_per_row):
        for j, (s, c, o) in enumerate(entries):
            row_slot[r, j], row_scale[r, j], row_op[r, j] = s, c, o
    vectors = torch.randn(num_slots + 1, L, H, generator=g)
    vectors[0] = 0
    inv = 1.0 / vectors.norm(dim=-1)
    inv[0] = 0
    return row_slot, row_scale, row_op, vectors, inv


def apply(fn, h, r, token_row, tabs, layer=1):
    fn(h, r, token_row, *tabs, step(int((token_row[: h.shape[0]] >= 0).sum())), layer)


@pytest.mark.parametrize("fn", IMPLS)
def test_add_adds_scaled_vector_and_leaves_unmapped_tokens_bitwise(fn):
    h, r = torch.randn(4, H), torch.randn(4, H)
    tabs = tables([[(1, 2.0, OP_ADD)]])
    token_row = torch.tensor([0, -1, 0, -1], dtype=torch.int32)
    h0 = h.clone()
    apply(fn, h, r, token_row, tabs)
    v = tabs[3][1, 1]
    torch.testing.assert_close(h[0], h0[0] + 2.0 * v)
    assert torch.equal(h[1], h0[1]) and torch.equal(h[3], h0[3])


@pytest.mark.parametrize("fn", IMPLS)
def test_ablate_removes_the_component_from_the_stream(fn):
    h, r = torch.randn(3, H) * 5, torch.randn(3, H) * 5
    tabs = tables([[(2, 1.0, OP_ABLATE)]])
    apply(fn, h, r, torch.zeros(3, dtype=torch.int32), tabs)
    d = tabs[3][2, 1] / tabs[3][2, 1].norm()
    proj = (h + r) @ d  # [3]
    assert proj.abs().max() < 1e-4


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.bfloat16, 2e-2)])
def test_ablate_in_model_dtype(dtype, tol):
    h, r = (torch.randn(8, H) * 3).to(dtype), (torch.randn(8, H) * 3).to(dtype)
    tabs = list(tables([[(1, 1.0, OP_ABLATE)]]))
    tabs[3] = tabs[3].to(dtype)
    apply(steer_apply_reference, h, r, torch.zeros(8, dtype=torch.int32), tabs)
    d = tabs[3][1, 1].float()
    d = d / d.norm()
    x = h.float() + r.float()
    assert ((x @ d).abs() / x.norm(dim=1)).max() < tol


@pytest.mark.parametrize("fn", IMPLS)
def test_add_normalized_keeps_the_stream_norm_and_moves_toward_v(fn):
    h, r = torch.randn(5, H), torch.randn(5, H)
    x0 = h + r
    tabs = tables([[(1, 3.0, OP_ADD_NORMALIZED)]])
    apply(fn, h, r, torch.zeros(5, dtype=torch.int32), tabs)
    x1 = h + r
    torch.testing.assert_close(x1.norm(dim=1), x0.norm(dim=1))
    v = tabs[3][1, 1]
    assert bool(((x1 @ v) > (x0 @ v)).all())


@pytest.mark.parametrize("fn", IMPLS)
def test_scale_zero_and_empty_slot_are_bitwise_noops(fn):
    h, r = torch.randn(4, H), torch.randn(4, H)
    h0 = h.clone()
    tabs = tables([[(1, 0.0, OP_ADD)], [(0, 5.0, OP_ADD)]])
    apply(fn, h, r, torch.tensor([0, 1, 0, 1], dtype=torch.int32), tabs)
    assert torch.equal(h, h0)


@pytest.mark.parametrize("fn", IMPLS)
def test_no_direction_at_layer_is_a_noop(fn):
    h, r = torch.randn(2, H), torch.randn(2, H)
    h0 = h.clone()
    tabs = list(tables([[(1, 1.0, OP_ADD_NORMALIZED), (2, 1.0, OP_ABLATE)]]))
    tabs[3][1:, 2] = 0
    tabs[4][1:, 2] = 0  # slots 1 and 2 have no direction at layer 2
    apply(fn, h, r, torch.zeros(2, dtype=torch.int32), tabs, layer=2)
    assert torch.equal(h, h0)


@pytest.mark.parametrize("fn", IMPLS)
def test_entries_compose_in_order(fn):
    h, r = torch.randn(3, H), torch.randn(3, H)
    both = h.clone()
    apply(fn, both, r, torch.zeros(3, dtype=torch.int32),
          tables([[(1, 1.5, OP_ADD), (2, 1.0, OP_ABLATE)]]))
    seq = h.clone()
    apply(fn, seq, r, torch.zeros(3, dtype=torch.int32), tables([[(1, 1.5, OP_ADD)]]))
    apply(fn, seq, r, torch.zeros(3, dtype=torch.int32), tables([[(2, 1.0, OP_ABLATE)]]))
    torch.testing.assert_close(both, seq)


@pytest.mark.parametrize("fn", IMPLS)
def test_add_a_plus_b_equals_both_applied(fn):
    h, r = torch.randn(3, H), torch.randn(3, H)
    tabs = tables([[(1, 1.0, OP_ADD), (2, -0.5, OP_ADD)]])
    both = h.clone()
    apply(fn, both, r, torch.zeros(3, dtype=torch.int32), tabs)
    v = tabs[3]
    torch.testing.assert_close(both, h + v[1, 1] - 0.5 * v[2, 1])


def test_active_flag_zero_skips_everything():
    h, r = torch.randn(2, H), torch.randn(2, H)
    h0 = h.clone()
    for fn in IMPLS:
        fn(h, r, torch.zeros(2, dtype=torch.int32), *tables([[(1, 1.0, OP_ADD)]]), step(0), 1)
    assert torch.equal(h, h0)


def test_custom_op_matches_reference():
    h, r = torch.randn(6, H), torch.randn(6, H)
    tabs = tables([[(1, 1.0, OP_ADD)], [(2, 0.7, OP_ABLATE), (3, 2.0, OP_ADD_NORMALIZED)]])
    token_row = torch.tensor([0, 1, -1, 1, 0, -1], dtype=torch.int32)
    ref, got = h.clone(), h.clone()
    apply(steer_apply_reference, ref, r, token_row, tabs)
    apply(torch.ops.vsteer.steer_apply, got, r, token_row, tabs)
    torch.testing.assert_close(got, ref)


def test_op_keeps_applying_under_torch_compile_when_buffers_change():
    """Invariant 6 at unit scale: the op is opaque to the compiler, so a compiled graph
    still reads the (in-place updated) tables on every call."""
    tabs = tables([[(1, 1.0, OP_ADD)]])
    token_row = torch.full((8,), -1, dtype=torch.int32)
    st = step(0)

    @torch.compile(backend="inductor", fullgraph=True)
    def layer(x, res):
        h = x * 2.0
        torch.ops.vsteer.steer_apply(h, res, token_row, *tabs, st, 1)
        return h + 1.0

    x, res = torch.randn(4, H), torch.randn(4, H)
    base = layer(x, res)  # traced with every token untouched
    token_row[:2] = 0
    st.copy_(step(2))  # new step: tables changed
    steered = layer(x, res)
    torch.testing.assert_close(steered[:2], base[:2] + tabs[3][1, 1])
    torch.testing.assert_close(steered[2:], base[2:])
    tabs[1][0, 0] = 3.0  # scale changed in place, in a new step
    st.copy_(step(2))
    torch.testing.assert_close(layer(x, res)[:2], base[:2] + 3.0 * tabs[3][1, 1])


@pytest.mark.parametrize("dtype,atol,rtol", [(torch.float32, 1e-5, 1e-5),
                                             (torch.bfloat16, 1e-2, 1e-2)])
@pytest.mark.parametrize("hidden,tokens", [(64, 1), (576, 37), (1000, 300)])
@pytest.mark.parametrize("ops", ["add", "mixed"])
@pytest.mark.parametrize("layout", ["span", "scattered"])
def test_cpu_kernel_matches_reference(dtype, atol, rtol, hidden, tokens, ops, layout):
    g = torch.Generator().manual_seed(hidden + tokens)
    slots, layers, rows, k = 5, 3, 4, 3
    vectors = (torch.randn(slots + 1, layers, hidden, generator=g) * 0.5).to(dtype)
    vectors[0] = 0
    vectors[2, 1] = 0  # slot 2 has no direction at layer 1
    inv = 1.0 / vectors.float().norm(dim=-1)
    inv[vectors.float().norm(dim=-1) == 0] = 0
    row_slot = torch.randint(0, slots + 1, (rows, k), generator=g, dtype=torch.int32)
    row_scale = torch.randn(rows, k, generator=g)
    allowed = [OP_ADD] if ops == "add" else [OP_ADD, OP_ABLATE, OP_ADD_NORMALIZED]
    row_op = torch.tensor(allowed, dtype=torch.int32)[
        torch.randint(0, len(allowed), (rows, k), generator=g)]
    row_slot[:, 1:][row_slot[:, :1].expand(-1, k - 1) == 0] = 0  # rows fill from entry 0
    if layout == "span":
        token_row = torch.full((tokens + 5,), -1, dtype=torch.int32)
        token_row[: tokens] = torch.randint(0, rows, (tokens,), generator=g, dtype=torch.int32)
    else:
        token_row = torch.randint(-1, rows, (tokens + 5,), generator=g, dtype=torch.int32)
    h = (torch.randn(tokens, hidden, generator=g) * 4).to(dtype)
    r = (torch.randn(tokens, hidden, generator=g) * 4).to(dtype)
    n = int((token_row[:tokens] >= 0).sum())
    for layer in range(layers):
        st = step(n)
        ref, got = h.clone(), h.clone()
        steer_apply_reference(ref, r, token_row, row_slot, row_scale, row_op, vectors, inv, st,
                              layer)
        steer_apply_cpu(got, r, token_row, row_slot, row_scale, row_op, vectors, inv, st, layer)
        torch.testing.assert_close(got, ref, atol=atol * 4, rtol=rtol)
        untouched = token_row[:tokens] < 0
        assert torch.equal(got[untouched], h[untouched])


def test_cpu_kernel_keeps_row_deltas_across_steps_until_the_epoch_moves():
    h0, r = torch.randn(2, H), torch.randn(2, H)
    tabs = list(tables([[(1, 1.0, OP_ADD)]]))
    token_row = torch.zeros(2, dtype=torch.int32)
    s1, s2, s3, epoch, new_epoch = (next(_serial) for _ in range(5))
    first = h0.clone()
    steer_apply_cpu(first, r, token_row, *tabs, torch.tensor([2, s1, epoch]), 1)
    tabs[1][0, 0] = 5.0  # rewritten row, but the epoch claims nothing changed ...
    stale = h0.clone()
    steer_apply_cpu(stale, r, token_row, *tabs, torch.tensor([2, s2, epoch]), 1)
    assert torch.equal(stale, first)  # ... so the cached delta is (correctly) reused
    fresh = h0.clone()
    steer_apply_cpu(fresh, r, token_row, *tabs, torch.tensor([2, s3, new_epoch]), 1)
    torch.testing.assert_close(fresh, h0 + 5.0 * tabs[3][1, 1])


def test_cpu_kernel_regathers_when_the_batch_order_changes_under_the_same_epoch():
    tabs = tables([[(1, 1.0, OP_ADD)], [(2, -2.0, OP_ADD)], [(3, 0.5, OP_ADD)]])
    r = torch.randn(3, H)
    epoch = next(_serial)
    for token_row in ([0, 1, 2], [0, 1, 2], [2, 0, 1], [1, -1, 0]):  # steady, then reordered
        tr = torch.tensor(token_row, dtype=torch.int32)
        h = torch.randn(3, H)
        ref, got = h.clone(), h.clone()
        n = int((tr >= 0).sum())
        steer_apply_reference(ref, r, tr, *tabs, step(n), 1)
        steer_apply_cpu(got, r, tr, *tabs, torch.tensor([n, next(_serial), epoch]), 1)
        torch.testing.assert_close(got, ref)


def test_cpu_kernel_counts_its_own_time_only_when_it_works():
    from vsteer.kernels.steer_cpu import kernel_seconds

    h, r = torch.randn(2, H), torch.randn(2, H)
    tabs = tables([[(1, 1.0, OP_ADD)]])
    before = kernel_seconds()
    steer_apply_cpu(h, r, torch.zeros(2, dtype=torch.int32), *tabs, step(0), 1)
    assert kernel_seconds() == before  # idle steps cost nothing to account
    steer_apply_cpu(h, r, torch.zeros(2, dtype=torch.int32), *tabs, step(2), 1)
    assert kernel_seconds() > before
