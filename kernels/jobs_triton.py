"""Triton kernel for `score_jobs`, twin of jobs_reference.py.

Semantics: see jobs_reference.py. The grid is a fixed number of programs (NPROG, from
the table's capacity: shapes only, so a captured CUDA graph replays with whatever the
table holds); the programs share out the jobs at this layer, which they find through
the table's per-layer index (`layer_index`, see jobs_reference.build_layer_index), so a
layer costs O(jobs at this layer), not O(capacity): a layer without jobs costs two
loads per program. A job pools its token rows in blocks of rows into one [H] fp32
vector, scores it, and, when it fires, walks the layers writing its force rows.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from vsteer.kernels import jobs_reference as ref

# The table's column indices and codes, defined once in jobs_reference.py. A kernel may
# read a global only as a tl.constexpr: the compiler rejects a plain int global
# ("Cannot access global variable") though the interpreter accepts one.
LAYER = tl.constexpr(ref.LAYER)
START = tl.constexpr(ref.START)
END = tl.constexpr(ref.END)
KIND = tl.constexpr(ref.KIND)
POOL = tl.constexpr(ref.POOL)
WEIGHT_ROW = tl.constexpr(ref.WEIGHT_ROW)
ACC_ROW = tl.constexpr(ref.ACC_ROW)
FIRST = tl.constexpr(ref.FIRST)
FINAL = tl.constexpr(ref.FINAL)
SOURCE = tl.constexpr(ref.SOURCE)
TARGET = tl.constexpr(ref.TARGET)
BIAS = tl.constexpr(ref.BIAS)
THRESHOLD = tl.constexpr(ref.THRESHOLD)
COUNT = tl.constexpr(ref.COUNT)
KIND_COS = tl.constexpr(ref.KIND_COS)
POOL_MEAN = tl.constexpr(ref.POOL_MEAN)


@triton.jit
def _score_job(
    j, hidden_ptr, residual_ptr, jobs_i_ptr, jobs_f_ptr, coeff_ptr, weights_ptr, acc_ptr,
    vectors_ptr, inv_norms_ptr, out_ptr, layer, hidden_size, num_layers,
    stride_hidden, stride_residual,
    NI: tl.constexpr, NF: tl.constexpr, HAS_RESIDUAL: tl.constexpr,
    BLOCK_T: tl.constexpr, BLOCK_H: tl.constexpr,
):
    # job row j, at this layer by the index (its LAYER column is checked again)
    ji = jobs_i_ptr + j * NI
    if tl.load(ji + LAYER) == layer:
        start = tl.load(ji + START)
        end = tl.load(ji + END)
        mean = tl.load(ji + POOL) == POOL_MEAN
        acc_row = tl.load(ji + ACC_ROW)
        cols = tl.arange(0, BLOCK_H)
        cmask = cols < hidden_size
        first = tl.where(mean, start, end - 1)
        v = tl.zeros([BLOCK_H], dtype=tl.float32)
        for t0 in range(first, end, BLOCK_T):
            rows = t0 + tl.arange(0, BLOCK_T)
            m2 = (rows < end)[:, None] & cmask[None, :]
            x = tl.load(hidden_ptr + rows.to(tl.int64)[:, None] * stride_hidden
                        + cols[None, :], mask=m2, other=0.0).to(tl.float32)  # [BT, BH]
            if HAS_RESIDUAL:
                x += tl.load(residual_ptr + rows.to(tl.int64)[:, None] * stride_residual
                             + cols[None, :], mask=m2, other=0.0).to(tl.float32)
            v += tl.sum(x, axis=0)  # [BLOCK_H]
        if mean & (acc_row >= 0):
            a_ptrs = acc_ptr + acc_row.to(tl.int64) * hidden_size + cols
            earlier = tl.load(a_ptrs, mask=cmask, other=0.0)  # [BLOCK_H]
            v += tl.where(tl.load(ji + FIRST) == 0, earlier, 0.0)
            tl.store(a_ptrs, v, mask=cmask)
        final = (tl.load(ji + FINAL) != 0) | (tl.load(ji + POOL) != POOL_MEAN)
        v = v * tl.where(mean, 1.0 / tl.load(jobs_f_ptr + j * NF + COUNT), 1.0)
        if final:
            w = tl.load(weights_ptr + tl.load(ji + WEIGHT_ROW).to(tl.int64) * hidden_size
                        + cols, mask=cmask, other=0.0)  # [BLOCK_H] fp32
            dot = tl.sum(v * w, axis=0)
            if tl.load(ji + KIND) == KIND_COS:
                score = dot / tl.maximum(tl.sqrt(tl.sum(v * v, axis=0)), 1e-12)
            else:
                score = 1.0 / (1.0 + tl.exp(-(dot + tl.load(jobs_f_ptr + j * NF + BIAS))))
            fired = score >= tl.load(jobs_f_ptr + j * NF + THRESHOLD)
            tl.store(out_ptr + j * 2, score)
            tl.store(out_ptr + j * 2 + 1, fired.to(tl.float32))
            target = tl.load(ji + TARGET)
            if fired & (target >= 0):
                source = tl.load(ji + SOURCE)
                for la in range(0, num_layers):
                    c = tl.load(coeff_ptr + j * num_layers + la)
                    if c != 0.0:
                        src = (source.to(tl.int64) * num_layers + la) * hidden_size + cols
                        dst = (target.to(tl.int64) * num_layers + la) * hidden_size + cols
                        row = tl.load(vectors_ptr + src, mask=cmask, other=0.0).to(tl.float32)
                        tl.store(vectors_ptr + dst,
                                 (row * c).to(vectors_ptr.dtype.element_ty), mask=cmask)
                        inv = tl.load(inv_norms_ptr + source * num_layers + la)
                        tl.store(inv_norms_ptr + target * num_layers + la, inv / tl.abs(c))

@triton.jit
def _score_jobs_kernel(
    hidden_ptr, residual_ptr, jobs_i_ptr, jobs_f_ptr, coeff_ptr, layer_index_ptr,
    weights_ptr, acc_ptr, vectors_ptr, inv_norms_ptr, out_ptr, layer, hidden_size,
    num_layers, stride_hidden, stride_residual,
    NI: tl.constexpr, NF: tl.constexpr, HAS_RESIDUAL: tl.constexpr,
    BLOCK_T: tl.constexpr, BLOCK_H: tl.constexpr, NPROG: tl.constexpr,
):
    # the jobs at this layer are layer_index[L + 1 + k] for k in [lo, hi): program p
    # takes k = lo + p, lo + p + NPROG, ... (no job at the layer: one pair of loads)
    lo = tl.load(layer_index_ptr + layer)
    hi = tl.load(layer_index_ptr + layer + 1)
    for k in range(lo + tl.program_id(0), hi, NPROG):
        j = tl.load(layer_index_ptr + num_layers + 1 + k)
        _score_job(j, hidden_ptr, residual_ptr, jobs_i_ptr, jobs_f_ptr, coeff_ptr,
                   weights_ptr, acc_ptr, vectors_ptr, inv_norms_ptr, out_ptr, layer,
                   hidden_size, num_layers, stride_hidden, stride_residual,
                   NI, NF, HAS_RESIDUAL, BLOCK_T, BLOCK_H)


MAX_PROGRAMS = 64  # programs per launch at most: each takes every NPROG-th job


def num_programs(capacity: int) -> int:
    return max(1, min(MAX_PROGRAMS, capacity))


def launch_config(hidden_size: int, has_residual: bool, capacity: int = MAX_PROGRAMS) -> dict:
    """Constexprs and num_warps of a launch (tests/test_triton_compile.py compiles these)."""
    block_h = triton.next_power_of_2(hidden_size)
    return dict(NI=ref.NUM_INT_COLUMNS, NF=ref.NUM_FLOAT_COLUMNS, HAS_RESIDUAL=has_residual,
                BLOCK_T=max(1, min(16, 8192 // block_h)), BLOCK_H=block_h,
                NPROG=num_programs(capacity), num_warps=4 if block_h <= 2048 else 8)


def score_jobs_triton(
    hidden: torch.Tensor,  # [T, H]
    residual: torch.Tensor | None,  # [T, H] or None
    jobs_i: torch.Tensor,  # [J, NUM_INT_COLUMNS] int32 contiguous
    jobs_f: torch.Tensor,  # [J, NUM_FLOAT_COLUMNS] float32 contiguous
    coeff: torch.Tensor,  # [J, L] float32 contiguous
    layer_index: torch.Tensor,  # [L + 1 + J] int32 (jobs_reference.build_layer_index)
    weights: torch.Tensor,  # [W, H] float32 contiguous
    acc: torch.Tensor,  # [A, H] float32 contiguous
    vectors: torch.Tensor,  # [S, L, H] contiguous
    inv_norms: torch.Tensor,  # [S, L] float32 contiguous
    out: torch.Tensor,  # [J, 2] float32
    layer: int,
) -> bool:
    """Launch parameters depend on shapes only, never on table contents. Returns False:
    a GPU caller cannot know without a sync, and the Triton steering kernel caches
    nothing derived from the slot table."""
    hidden_size = hidden.shape[1]
    res = residual if residual is not None else hidden
    capacity = jobs_i.shape[0]
    _score_jobs_kernel[(num_programs(capacity),)](
        hidden, res, jobs_i, jobs_f, coeff, layer_index, weights, acc, vectors, inv_norms,
        out, layer, hidden_size, vectors.shape[1], hidden.stride(0), res.stride(0),
        **launch_config(hidden_size, residual is not None, capacity),
    )
    return False
