"""Triton kernel for `steer_apply` (one program per token), twin of steer_reference.py.

Semantics: see steer_reference.py. Per token t with row r = token_row[t] >= 0, for
each of the row's K entries (slot s, scale c, op) with a direction at `layer`:
    ADD:            h += c * v                       (residual never read)
    ABLATE:         h -= c * ((h + res) · v̂) v̂
    ADD_NORMALIZED: y = (h + res) + c v;  h = y * |h + res| / |y| - res
in fp32 registers, stored once in hidden's dtype. Tokens with r < 0 are not touched;
`step` is not read, so a captured CUDA graph replays correctly with new tables.
On CPU tensors it runs under Triton's interpreter (TRITON_INTERPRET=1 set before
triton is first imported), which is how CI checks it against the reference.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _steer_apply_kernel(
    hidden_ptr, residual_ptr, token_row_ptr, row_slot_ptr, row_scale_ptr, row_op_ptr,
    vectors_ptr, inv_ptr, layer, hidden_size, num_layers, stride_hidden, stride_residual,
    K: tl.constexpr, HAS_RESIDUAL: tl.constexpr, BLOCK_H: tl.constexpr,
):
    t = tl.program_id(0)
    row = tl.load(token_row_ptr + t)
    if row >= 0:
        offs = tl.arange(0, BLOCK_H)
        mask = offs < hidden_size
        h_ptrs = hidden_ptr + t.to(tl.int64) * stride_hidden + offs
        h = tl.load(h_ptrs, mask=mask, other=0.0).to(tl.float32)  # [BLOCK_H]
        r_ptrs = residual_ptr + t.to(tl.int64) * stride_residual + offs
        for k in tl.static_range(K):
            s = tl.load(row_slot_ptr + row * K + k)
            inv = tl.load(inv_ptr + s * num_layers + layer)
            if (s > 0) & (inv > 0):
                c = tl.load(row_scale_ptr + row * K + k)
                op = tl.load(row_op_ptr + row * K + k)
                v_ptrs = vectors_ptr + (s.to(tl.int64) * num_layers + layer) * hidden_size + offs
                v = tl.load(v_ptrs, mask=mask, other=0.0).to(tl.float32)  # [BLOCK_H]
                if op == 0:
                    h = h + c * v
                else:
                    if HAS_RESIDUAL:
                        res = tl.load(r_ptrs, mask=mask, other=0.0).to(tl.float32)
                    else:
                        res = tl.zeros([BLOCK_H], dtype=tl.float32)
                    x = h + res
                    if op == 1:
                        d = v * inv
                        h = h - c * tl.sum(x * d, axis=0) * d
                    else:
                        y = x + c * v
                        nx = tl.sqrt(tl.sum(x * x, axis=0))
                        ny = tl.maximum(tl.sqrt(tl.sum(y * y, axis=0)), 1e-12)
                        h = y * (nx / ny) - res
        tl.store(h_ptrs, h.to(hidden_ptr.dtype.element_ty), mask=mask)


def launch_config(hidden_size: int, entries: int, has_residual: bool) -> dict:
    """Constexprs and num_warps of a launch (tests/test_triton_compile.py compiles these)."""
    block = triton.next_power_of_2(hidden_size)
    return dict(K=entries, HAS_RESIDUAL=has_residual, BLOCK_H=block,
                num_warps=4 if block <= 2048 else 8)


def steer_apply_triton(
    hidden: torch.Tensor,  # [T, H], modified in place
    residual: torch.Tensor | None,  # [T, H] or None
    token_row: torch.Tensor,  # [>=T] int32
    row_slot: torch.Tensor,  # [R, K] int32
    row_scale: torch.Tensor,  # [R, K] float32
    row_op: torch.Tensor,  # [R, K] int32
    vectors: torch.Tensor,  # [S, L, H] contiguous
    inv_norms: torch.Tensor,  # [S, L] float32 contiguous
    step: torch.Tensor,  # unused: kept for the op's signature (CUDA-graph safe)
    layer: int,
) -> None:
    num_tokens, hidden_size = hidden.shape
    if num_tokens == 0:
        return
    res = residual if residual is not None else hidden
    _steer_apply_kernel[(num_tokens,)](
        hidden, res, token_row, row_slot.contiguous(), row_scale.contiguous(),
        row_op.contiguous(), vectors, inv_norms, layer, hidden_size, vectors.shape[1],
        hidden.stride(0), res.stride(0),
        **launch_config(hidden_size, row_slot.shape[1], residual is not None),
    )
