"""`vsteer::sae_features` (kernels/sae_features_op.py): the graph-safe path against the
token-by-token reference; `add` against the steering op's `add` with the decoder row as
the vector, bit for bit; `clamp` lands the feature's activation on the value."""

from __future__ import annotations

import numpy as np
import torch

from vsteer.kernels.sae_features_op import (
    OP_ADD,
    OP_CLAMP,
    sae_features_graph_safe,
    sae_features_reference,
)
from vsteer.kernels.steer_cpu import steer_apply_cpu
from vsteer.kernels.steer_reference import OP_ADD as STEER_ADD

T, H, S, R, K, L = 12, 16, 5, 4, 3, 3


def tables(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    dec = torch.randn(S, H, generator=g)
    dec = dec / dec.norm(dim=1, keepdim=True)
    dec[0] = 0
    enc = dec.clone()  # tied, unit: dec · enc = 1
    bias = torch.randn(S, generator=g) * 0.1
    thr = torch.tensor([0.0, 0.0, 0.3, 0.0, 0.5])
    layer_of = torch.tensor([-1, 1, 1, 2, 1])
    token_row = torch.tensor([-1, 0, 0, 1, 2, 3, -1, 1, 2, 3, 0, -1], dtype=torch.int32)
    row_slot = torch.tensor([[1, 2, 0], [3, 0, 0], [2, 4, 1], [4, 4, 0]], dtype=torch.int32)
    row_op = torch.tensor([[OP_ADD, OP_CLAMP, 0], [OP_CLAMP, 0, 0],
                           [OP_CLAMP, OP_ADD, OP_CLAMP], [OP_ADD, OP_CLAMP, 0]],
                          dtype=torch.int32)
    row_value = torch.randn(R, K, generator=g) * 3
    return token_row, row_slot, row_op, row_value, dec, enc, bias, thr, layer_of


def test_the_graph_safe_path_equals_the_reference_and_leaves_other_tokens_bit_exact():
    g = torch.Generator().manual_seed(1)
    t = tables()
    active = torch.ones(L, dtype=torch.int64)
    for layer in range(L):
        for dtype in (torch.float32, torch.bfloat16):
            hidden = (torch.randn(T, H, generator=g) * 2).to(dtype)
            residual = torch.randn(T, H, generator=g).to(dtype)
            a, b = hidden.clone(), hidden.clone()
            sae_features_reference(a, residual, *t, active, layer)
            sae_features_graph_safe(b, residual, *t, layer)
            tol = 1e-5 if dtype == torch.float32 else 2e-2
            assert torch.allclose(a.float(), b.float(), atol=tol, rtol=tol)
            untouched = t[0] < 0
            assert torch.equal(b[untouched], hidden[untouched])
            if layer == 0:  # no slot reads layer 0
                assert torch.equal(b, hidden)


def test_add_equals_steering_with_the_decoder_row_bit_for_bit():
    t = tables()
    dec = t[4]
    g = torch.Generator().manual_seed(2)
    hidden = torch.randn(T, H, generator=g)
    residual = torch.randn(T, H, generator=g)
    # one add entry (slot 3, layer 2) for tokens 3 and 7
    token_row = torch.full((T,), -1, dtype=torch.int32)
    token_row[[3, 7]] = 0
    a = hidden.clone()
    sae_features_graph_safe(a, residual, token_row, torch.tensor([[3, 0, 0]], dtype=torch.int32),
                            torch.zeros(1, K, dtype=torch.int32),
                            torch.tensor([[2.5, 0, 0]]), *t[4:], 2)
    vectors = torch.zeros(2, L, H)
    vectors[1, 2] = dec[3]
    inv = torch.zeros(2, L)
    inv[1, 2] = 1.0 / float(dec[3].norm())
    b = hidden.clone()
    steer_apply_cpu(b, residual, token_row, torch.tensor([[1]], dtype=torch.int32),
                    torch.tensor([[2.5]]), torch.tensor([[STEER_ADD]], dtype=torch.int32),
                    vectors, inv, torch.tensor([2, 11, 12, 0]), 2)
    assert torch.equal(a, b) and not torch.equal(a, hidden)


def test_clamp_sets_an_active_feature_to_the_value():
    t = tables()
    dec, enc, bias, thr = t[4], t[5], t[6], t[7]
    g = torch.Generator().manual_seed(3)
    hidden = torch.randn(4, H, generator=g) + 3 * enc[1]  # feature 1 active
    token_row = torch.zeros(4, dtype=torch.int32)
    out = hidden.clone()
    sae_features_graph_safe(out, None, token_row, torch.tensor([[1, 0, 0]], dtype=torch.int32),
                            torch.tensor([[OP_CLAMP, 0, 0]], dtype=torch.int32),
                            torch.tensor([[0.75, 0, 0]]), dec, enc, bias, thr, t[8], 1)
    pre = out @ enc[1] + bias[1]
    assert torch.allclose(pre, torch.full_like(pre, 0.75), atol=1e-5)
    before = hidden @ enc[1] + bias[1]
    assert (before > 1.0).all()  # it did move


def test_an_idle_layer_is_skipped_on_the_host_count():
    t = tables()
    hidden = torch.randn(T, H)
    before = hidden.clone()
    torch.ops.vsteer.sae_features(hidden, None, *t, torch.zeros(L, dtype=torch.int64), 1)
    assert torch.equal(hidden, before)
    torch.ops.vsteer.sae_features(hidden, None, *t, torch.ones(L, dtype=torch.int64), 1)
    assert not torch.equal(hidden, before)
    assert np.isfinite(hidden.numpy()).all()
