"""Triton kernels for probe scoring, twins of probe_reference.py.

Semantics: see probe_reference.py. Pooled modes run one program per segment, walking
its tokens in blocks of rows; per-token mode runs one program per token. The probe is
linear, so mean pooling is the mean of the per-token dot products (no [H] pooled
vector is kept).
"""

from __future__ import annotations

import triton
import triton.language as tl

from vsteer.kernels.probe_reference import PER_TOKEN, POOL_LAST


@triton.jit
def _probe_segment_kernel(
    hidden_ptr, residual_ptr, cu_ptr, weight_ptr, out_ptr, bias, hidden_size,
    stride_hidden, stride_residual,
    HAS_RESIDUAL: tl.constexpr, LAST: tl.constexpr, BLOCK_T: tl.constexpr,
    BLOCK_H: tl.constexpr,
):
    i = tl.program_id(0)
    start = tl.load(cu_ptr + i)
    end = tl.load(cu_ptr + i + 1)
    cols = tl.arange(0, BLOCK_H)
    cmask = cols < hidden_size
    w = tl.load(weight_ptr + cols, mask=cmask, other=0.0).to(tl.float32)  # [BLOCK_H]
    first = end - 1 if LAST else start
    acc = tl.zeros([BLOCK_T], dtype=tl.float32)
    for t0 in range(first, end, BLOCK_T):
        rows = t0 + tl.arange(0, BLOCK_T)
        rmask = rows < end
        m2 = rmask[:, None] & cmask[None, :]
        x = tl.load(hidden_ptr + rows.to(tl.int64)[:, None] * stride_hidden + cols[None, :],
                    mask=m2, other=0.0).to(tl.float32)  # [BLOCK_T, BLOCK_H]
        if HAS_RESIDUAL:
            x += tl.load(residual_ptr + rows.to(tl.int64)[:, None] * stride_residual
                         + cols[None, :], mask=m2, other=0.0).to(tl.float32)
        acc += tl.sum(x * w[None, :], axis=1)  # [BLOCK_T]
    n = tl.maximum(end - first, 1)
    z = tl.sum(acc, axis=0) / n.to(tl.float32) + bias
    tl.store(out_ptr + i, 1.0 / (1.0 + tl.exp(-z)))


@triton.jit
def _probe_token_kernel(
    hidden_ptr, residual_ptr, weight_ptr, out_ptr, bias, hidden_size, stride_hidden,
    stride_residual, HAS_RESIDUAL: tl.constexpr, BLOCK_H: tl.constexpr,
):
    t = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK_H)
    cmask = cols < hidden_size
    w = tl.load(weight_ptr + cols, mask=cmask, other=0.0).to(tl.float32)
    x = tl.load(hidden_ptr + t * stride_hidden + cols, mask=cmask, other=0.0).to(tl.float32)
    if HAS_RESIDUAL:
        x += tl.load(residual_ptr + t * stride_residual + cols, mask=cmask,
                     other=0.0).to(tl.float32)
    z = tl.sum(x * w, axis=0) + bias
    tl.store(out_ptr + t, 1.0 / (1.0 + tl.exp(-z)))


def launch(hidden_size: int, has_residual: bool, pooling: int):
    """The kernel a pooling mode launches, with its constexprs and num_warps
    (tests/test_triton_compile.py compiles these)."""
    block_h = triton.next_power_of_2(hidden_size)
    cfg = dict(HAS_RESIDUAL=has_residual, BLOCK_H=block_h,
               num_warps=4 if block_h <= 2048 else 8)
    if pooling == PER_TOKEN:
        return _probe_token_kernel, cfg
    return _probe_segment_kernel, dict(cfg, LAST=pooling == POOL_LAST,
                                       BLOCK_T=max(1, min(16, 8192 // block_h)))


def probe_score_triton(hidden, residual, cu_seqlens, weight, bias, pooling, out) -> None:
    num_tokens, hidden_size = hidden.shape
    res = residual if residual is not None else hidden
    kernel, cfg = launch(hidden_size, residual is not None, pooling)
    if pooling == PER_TOKEN:
        if num_tokens:
            kernel[(num_tokens,)](hidden, res, weight, out, float(bias), hidden_size,
                                  hidden.stride(0), res.stride(0), **cfg)
        return
    segments = cu_seqlens.shape[0] - 1
    if segments:
        kernel[(segments,)](hidden, res, cu_seqlens, weight, out, float(bias), hidden_size,
                            hidden.stride(0), res.stride(0), **cfg)
