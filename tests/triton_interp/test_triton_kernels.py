"""Each Triton kernel equals its plain-torch reference (TRITON_INTERPRET=1, CPU).

Tolerances, per dtype of the tensor the kernel writes (both sides compute in fp32 and
round once, so they differ by reduction order and at most a rounding step):
    steer_apply:      fp32 rtol 1e-5; fp16 / bf16: 2 ulps of the dtype at the row's
                      largest magnitude.
    score_jobs:       scores atol 1e-5; fp32 accumulators rtol 1e-5 / atol 1e-3 (sums
                      of up to 4096 rows); forced slot rows as steer_apply.
"""

from __future__ import annotations

import pytest
import torch

from vsteer.kernels.jobs_reference import (
    KIND_COS,
    KIND_SIGMOID,
    POOL_LAST,
    POOL_MEAN,
    build_layer_index,
    score_jobs_reference,
)
from vsteer.kernels.jobs_triton import score_jobs_triton
from vsteer.kernels.steer_reference import (
    OP_ABLATE,
    OP_ADD,
    OP_ADD_NORMALIZED,
    steer_apply_reference,
)
from vsteer.kernels.steer_triton import steer_apply_triton

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
# (tokens, hidden): 1..4096 tokens, 64..8192 hidden, non-powers of two included; the
# largest products are left out to keep the interpreter's run short.
SHAPES = [(1, 64), (7, 100), (33, 576), (300, 1000), (4096, 64), (1024, 320),
          (5, 4096), (3, 8192), (64, 4096), (9, 5000)]


def _ulps(dtype: torch.dtype) -> float:
    return {torch.float16: 2.0**-10, torch.bfloat16: 2.0**-7}[dtype] * 2


def _close(got: torch.Tensor, ref: torch.Tensor, dtype: torch.dtype) -> None:
    if dtype == torch.float32:
        torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)
    else:
        scale = ref.float().abs().amax(dim=-1, keepdim=True).clamp_min(1.0)
        err = (got.float() - ref.float()).abs()
        assert bool((err <= _ulps(dtype) * scale).all()), float((err / scale).max())


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("tokens,hidden", SHAPES)
@pytest.mark.parametrize("residual", [True, False], ids=["pair", "single"])
def test_steer_apply(dtype, tokens, hidden, residual):
    g = torch.Generator().manual_seed(tokens * 7 + hidden)
    slots, layers, rows, k = 6, 3, 5, 3
    vectors = torch.randn(slots + 1, layers, hidden, generator=g).to(dtype)
    vectors[0] = 0
    vectors[3, 1] = 0  # slot 3 has no direction at layer 1
    norms = vectors.float().norm(dim=-1)
    inv = torch.where(norms > 0, 1.0 / norms, torch.zeros_like(norms))
    row_slot = torch.randint(0, slots + 1, (rows, k), generator=g, dtype=torch.int32)
    row_scale = torch.randn(rows, k, generator=g)
    row_op = torch.tensor([OP_ADD, OP_ABLATE, OP_ADD_NORMALIZED], dtype=torch.int32)[
        torch.randint(0, 3, (rows, k), generator=g)]
    token_row = torch.randint(-1, rows, (tokens + 3,), generator=g, dtype=torch.int32)
    h = (torch.randn(tokens, hidden, generator=g) * 3).to(dtype)
    r = (torch.randn(tokens, hidden, generator=g) * 3).to(dtype) if residual else None
    step = torch.tensor([int((token_row[:tokens] >= 0).sum()), 1, 1])
    # layer 1 holds the slot without a direction; the interpreter is slow on big T
    for layer in (range(layers) if tokens < 1024 else (1,)):
        ref, got = h.clone(), h.clone()
        steer_apply_reference(ref, r, token_row, row_slot, row_scale, row_op, vectors, inv,
                              step, layer)
        steer_apply_triton(got, r, token_row, row_slot, row_scale, row_op, vectors, inv, step,
                           layer)
        _close(got, ref, dtype)
        untouched = token_row[:tokens] < 0
        assert torch.equal(got[untouched], h[untouched])  # -1 rows: bit for bit


def _job_tables(tokens: int, hidden: int, layers: int, g: torch.Generator):
    """Jobs of every kind at layer 1 (guards that fire and that do not, mean chunks that
    start, continue and finish, a one-chunk mean, per-token scores), one at layer 2,
    and inactive rows."""
    t1 = max(tokens - 1, 0)
    half = max(tokens // 2, 1)
    rows = [  # layer, start, end, kind, pool, weight, acc, first, final, src, dst
        [1, t1, t1 + 1, KIND_COS, POOL_LAST, 0, -1, 1, 1, 1, 3],  # fires: force
        [1, 0, 1, KIND_COS, POOL_LAST, 1, -1, 1, 1, 2, 4],  # never fires
        [1, 0, half, KIND_SIGMOID, POOL_MEAN, 2, 0, 1, 0, -1, -1],  # first chunk
        [1, half - 1, tokens, KIND_SIGMOID, POOL_MEAN, 2, 1, 0, 1, 2, 5],  # last chunk
        [1, 0, tokens, KIND_SIGMOID, POOL_MEAN, 1, -1, 1, 1, -1, -1],  # one chunk
        [1, t1, t1 + 1, KIND_SIGMOID, POOL_LAST, 0, -1, 1, 1, -1, -1],  # per token
        [2, 0, tokens, KIND_SIGMOID, POOL_MEAN, 0, 2, 1, 1, 1, 6],  # other layer
        [-1, 0, tokens, KIND_COS, POOL_LAST, 0, 3, 1, 1, 1, 6],  # inactive
    ]
    jobs_i = torch.tensor(rows, dtype=torch.int32)
    jobs_f = torch.tensor([  # bias, threshold, count
        [0.0, -2.0, 1], [0.0, 2.0, 1], [0.1, 0.0, half], [-0.1, 0.0, 100.0 + tokens],
        [0.2, 0.0, tokens], [0.3, float("inf"), 1], [0.0, 0.0, tokens], [0.0, 0.0, 1]])
    coeff = torch.zeros(len(rows), layers)
    coeff[0, 2], coeff[0, 0] = 1.5, -0.5  # also a layer before the job's
    coeff[3, 3] = 2.0
    weights = torch.randn(3, hidden, generator=g) / hidden**0.5
    acc = torch.randn(4, hidden, generator=g) * 10  # row 1: earlier chunks' sum
    return jobs_i, jobs_f, coeff, weights, acc


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("tokens,hidden", [(1, 64), (7, 100), (33, 576), (4096, 64),
                                           (5, 4096), (3, 8192), (300, 1000)])
@pytest.mark.parametrize("residual", [True, False], ids=["pair", "single"])
def test_score_jobs(dtype, tokens, hidden, residual):
    g = torch.Generator().manual_seed(tokens * 3 + hidden)
    layers = 4
    h = torch.randn(tokens, hidden, generator=g).to(dtype)
    r = torch.randn(tokens, hidden, generator=g).to(dtype) if residual else None
    jobs_i, jobs_f, coeff, weights, acc = _job_tables(tokens, hidden, layers, g)
    vectors = torch.randn(7, layers, hidden, generator=g).to(dtype)
    inv = 1.0 / vectors.float().norm(dim=-1)
    state = {}
    index = torch.from_numpy(build_layer_index(jobs_i[:, 0].tolist(), layers, len(jobs_i)))
    for side, fn in (("ref", score_jobs_reference), ("triton", score_jobs_triton)):
        t = dict(acc=acc.clone(), vectors=vectors.clone(), inv=inv.clone(),
                 out=torch.full((jobs_i.shape[0], 2), 7.0))
        fn(h, r, jobs_i, jobs_f, coeff, index, weights, t["acc"], t["vectors"], t["inv"],
           t["out"], 1)
        state[side] = t
    ref, got = state["ref"], state["triton"]
    torch.testing.assert_close(got["out"], ref["out"], rtol=0, atol=1e-5)
    torch.testing.assert_close(got["acc"], ref["acc"], rtol=1e-5, atol=1e-3)
    _close(got["vectors"], ref["vectors"], dtype)
    torch.testing.assert_close(got["inv"], ref["inv"], rtol=1e-6, atol=0)
    # what the semantics say, beyond agreement of the two
    assert ref["out"][0, 1] == 1 and ref["out"][1, 1] == 0  # guard fired / did not
    assert torch.equal(ref["out"][[2, 6, 7]], torch.full((3, 2), 7.0))  # not scored
    assert ref["out"][5, 1] == 0  # per-token threshold +inf never fires
    forced = (vectors[1, 2].float() * 1.5).to(dtype)
    assert torch.equal(ref["vectors"][3, 2], forced)
    assert torch.equal(got["vectors"][4], vectors[4])  # the guard that did not fire
    assert torch.equal(got["vectors"][6], vectors[6])  # the job at layer 2
    assert torch.equal(got["acc"][[2, 3]], acc[[2, 3]])  # layer-2 / inactive rows


@pytest.mark.parametrize("capacity,at_layer", [(300, 200), (8, 3), (64, 0)])
def test_score_jobs_shares_a_layers_jobs_among_a_fixed_grid(capacity, at_layer):
    """More jobs at the layer than programs (each program takes every NPROG-th one),
    jobs at other layers in between, and a layer with none: equal to the reference."""
    g = torch.Generator().manual_seed(capacity + at_layer)
    tokens, hidden, layers = max(at_layer, 1) + 2, 96, 3
    h = torch.randn(tokens, hidden, generator=g)
    layer_of = [1 if j % 3 != 2 else 2 for j in range(capacity)]  # 2/3 of rows at layer 1
    here = [j for j in range(capacity) if layer_of[j] == 1][:at_layer]
    layer_of = [la if (la != 1 or j in here) else 0 for j, la in enumerate(layer_of)]
    rows = [[la, j % tokens, j % tokens + 1, KIND_SIGMOID, POOL_LAST, j % 2, -1, 1, 1, -1, -1]
            for j, la in enumerate(layer_of)]
    jobs_i = torch.tensor(rows, dtype=torch.int32)
    jobs_f = torch.tensor([[0.01 * j, 0.5, 1.0] for j in range(capacity)])
    coeff = torch.zeros(capacity, layers)
    weights = torch.randn(2, hidden, generator=g) / hidden**0.5
    index = torch.from_numpy(build_layer_index(layer_of, layers, capacity))
    vectors, inv = torch.zeros(1, layers, hidden), torch.zeros(1, layers)
    outs = []
    for fn in (score_jobs_reference, score_jobs_triton):
        out = torch.full((capacity, 2), 7.0)
        fn(h, None, jobs_i, jobs_f, coeff, index, weights, torch.zeros(1, hidden), vectors,
           inv, out, 1)
        outs.append(out)
    torch.testing.assert_close(outs[1], outs[0], rtol=0, atol=1e-5)
    assert int((outs[0][:, 0] != 7.0).sum()) == at_layer  # exactly the layer's jobs scored
