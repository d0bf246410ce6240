"""Triton kernel for exit confidence, twin of exit_reference.py.

Semantics: see exit_reference.py. One program per token walks the vocabulary in
blocks with an online softmax: a running max m, s = Σ exp(z - m) and
u = Σ exp(z - m)·z (both rescaled when m grows), and the two largest logits. Then
    confidence = 1 / s,   margin = (1 - exp(top2 - m)) / s,   entropy = log s + m - u / s
Probabilities are never materialized.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _exit_confidence_kernel(logits_ptr, out_ptr, vocab, stride, BLOCK_V: tl.constexpr):
    t = tl.program_id(0).to(tl.int64)
    row = logits_ptr + t * stride
    m = float("-inf")
    s = 0.0
    u = 0.0
    top1 = float("-inf")
    top2 = float("-inf")
    for v0 in range(0, vocab, BLOCK_V):
        cols = v0 + tl.arange(0, BLOCK_V)
        mask = cols < vocab
        z = tl.load(row + cols, mask=mask, other=float("-inf")).to(tl.float32)  # [BLOCK_V]
        b1 = tl.max(z, axis=0)
        arg = tl.argmax(z, axis=0)
        b2 = tl.max(tl.where(tl.arange(0, BLOCK_V) == arg, float("-inf"), z), axis=0)
        top2 = tl.maximum(tl.minimum(top1, b1), tl.maximum(top2, b2))
        top1 = tl.maximum(top1, b1)
        m_new = tl.maximum(m, b1)
        if m_new > float("-inf"):
            scale = tl.exp(m - m_new)
            live = mask & (z > float("-inf"))
            e = tl.where(live, tl.exp(z - m_new), 0.0)
            s = s * scale + tl.sum(e, axis=0)
            u = u * scale + tl.sum(e * tl.where(live, z, 0.0), axis=0)
            m = m_new
    tl.store(out_ptr + t * 3 + 0, 1.0 / s)
    tl.store(out_ptr + t * 3 + 1, (1.0 - tl.exp(top2 - m)) / s)
    tl.store(out_ptr + t * 3 + 2, tl.log(s) + m - u / s)


def launch_config() -> dict:
    """Constexprs and num_warps of a launch (tests/test_triton_compile.py compiles these)."""
    return dict(BLOCK_V=1024, num_warps=4)


def exit_confidence_triton(logits: torch.Tensor, out: torch.Tensor) -> None:
    """logits: [T, V] (row stride may differ from V); out: [T, 3] float32 contiguous."""
    num_tokens, vocab = logits.shape
    if num_tokens:
        _exit_confidence_kernel[(num_tokens,)](logits, out, vocab, logits.stride(0),
                                               **launch_config())
