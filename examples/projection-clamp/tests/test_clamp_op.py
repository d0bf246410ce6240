"""The clamp op against its token-by-token reference, eager and under torch.compile."""

from __future__ import annotations

import math

import pytest
import torch
from vsteer_projection_clamp.op import clamp_apply, clamp_reference, clamp_rows


def _case(dtype: torch.dtype):
    g = torch.Generator().manual_seed(0)
    T, H, L, D = 9, 16, 3, 4
    hidden = torch.randn(T, H, generator=g).to(dtype)
    residual = torch.randn(T, H, generator=g).to(dtype)
    dirs = torch.zeros(D, L, H)
    for s in range(D):
        for la in (0, 2):  # layer 1 has no direction: untouched there
            v = torch.randn(H, generator=g)
            dirs[s, la] = v / v.norm()
    token_row = torch.tensor([-1, 0, 0, 1, 1, 2, -1, 2, 0] + [-1] * 3, dtype=torch.int32)
    row_dir = torch.tensor([1, 3, 1], dtype=torch.int32)
    row_lo = torch.tensor([-0.2, -math.inf, 5.0])
    row_hi = torch.tensor([0.2, 0.0, 5.0])
    active = torch.tensor([7], dtype=torch.int64)
    return hidden, residual, token_row, row_dir, row_lo, row_hi, dirs, active


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("layer", [0, 1, 2])
def test_the_op_equals_its_reference(dtype, layer):
    args = _case(dtype)
    want, got = args[0].clone(), args[0].clone()
    clamp_reference(want, *args[1:], layer)
    clamp_apply(got, *args[1:], layer)
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    torch.testing.assert_close(got, want, atol=tol, rtol=tol)
    untouched = args[2][:9] < 0
    assert torch.equal(got[untouched], args[0][untouched])  # bit for bit
    if layer == 1:
        assert torch.equal(got, args[0])
    graph_safe = args[0].clone()  # the CUDA path: no host flag, same result
    clamp_rows(graph_safe, *args[1:7], layer)
    assert torch.equal(graph_safe, got)


def test_clamped_components_land_in_the_band():
    hidden, residual, token_row, row_dir, row_lo, row_hi, dirs, active = _case(torch.float32)
    before = hidden.clone()
    clamp_apply(hidden, residual, token_row, row_dir, row_lo, row_hi, dirs, active, 0)
    for t in range(9):
        r = int(token_row[t])
        if r < 0:
            continue
        u = dirs[int(row_dir[r]), 0]
        c = float((hidden[t] + residual[t]) @ u)
        c0 = float((before[t] + residual[t]) @ u)
        lo, hi = float(row_lo[r]), float(row_hi[r])
        assert lo - 1e-4 <= c <= hi + 1e-4
        if lo <= c0 <= hi:
            assert torch.equal(hidden[t], before[t])  # already in the band: untouched


def test_an_idle_step_does_nothing_and_the_op_compiles():
    args = list(_case(torch.float32))
    args[7] = torch.zeros(1, dtype=torch.int64)
    h = args[0].clone()
    torch.ops.vsteer_clamp.clamp_apply(h, *args[1:], 0)
    assert torch.equal(h, args[0])

    def layer(hidden, residual, *rest):
        hidden = hidden * 1.0
        torch.ops.vsteer_clamp.clamp_apply(hidden, residual, *rest, 2)
        return hidden

    args = _case(torch.float32)
    want = args[0].clone()
    clamp_reference(want, *args[1:], 2)
    got = torch.compile(layer, fullgraph=True)(*args)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
