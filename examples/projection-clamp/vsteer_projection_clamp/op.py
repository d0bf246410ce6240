"""`torch.ops.vsteer_clamp.clamp_apply`: the clamp at one layer, for every token of the
step, as one custom op (opaque to torch.compile, mutates `hidden` in place).

Semantics (x[t] = hidden[t] + residual[t] is the stream at layer `layer`):
    if active[0] == 0: return      # CPU only: a host-side count (CUDA replays graphs)
    for t in range(T):
        r = token_row[t]
        if r < 0: continue                        # not clamped, bit for bit
        u = dirs[row_dir[r], layer]               # unit direction, or 0: no clamp here
        c = x[t] . u
        hidden[t] += (clamp(c, row_lo[r], row_hi[r]) - c) * u
Arithmetic in fp32; hidden is rounded back to its dtype once.
"""

from __future__ import annotations

import torch

LIB = torch.library.Library("vsteer_clamp", "DEF")
LIB.define("clamp_apply(Tensor(a!) hidden, Tensor? residual, Tensor token_row, "
           "Tensor row_dir, Tensor row_lo, Tensor row_hi, Tensor dirs, Tensor active, "
           "int layer) -> ()")


def clamp_reference(hidden, residual, token_row, row_dir, row_lo, row_hi, dirs, active,
                    layer: int) -> None:
    """The semantics above, token by token (the oracle)."""
    if int(active[0]) == 0:
        return
    for t in range(hidden.shape[0]):
        r = int(token_row[t])
        if r < 0:
            continue
        u = dirs[int(row_dir[r]), layer].float()
        if not bool(u.any()):
            continue
        x = hidden[t].float() + (residual[t].float() if residual is not None else 0.0)
        c = x @ u
        target = c.clamp(float(row_lo[r]), float(row_hi[r]))
        hidden[t] = (hidden[t].float() + (target - c) * u).to(hidden.dtype)


def clamp_apply(hidden, residual, token_row, row_dir, row_lo, row_hi, dirs, active,
                layer: int) -> None:
    """CPU: vectorized over the step's tokens, skipping idle steps on the host count."""
    if int(active[0]) == 0:
        return
    clamp_rows(hidden, residual, token_row, row_dir, row_lo, row_hi, dirs, layer)


def clamp_rows(hidden, residual, token_row, row_dir, row_lo, row_hi, dirs, layer: int
               ) -> None:
    """The clamp with no host branch (CUDA: a captured graph replays every step, so the
    rows, not a host flag, say who is clamped); no read-back. Tokens the clamp does
    not move keep their bits through a select, not an add of 0."""
    T = hidden.shape[0]
    rows = token_row[:T].long()  # [T]
    on = rows >= 0
    r = rows.clamp_min(0)
    u = dirs[row_dir[r].long(), layer].float()  # [T, H]
    x = hidden.float() + (residual.float() if residual is not None else 0.0)  # [T, H]
    c = (x * u).sum(-1)  # [T]
    target = torch.minimum(torch.maximum(c, row_lo[r]), row_hi[r])
    delta = torch.where(on, target - c, torch.zeros_like(c))  # [T]
    moved = (on & (delta != 0))[:, None]  # [T, 1]
    new = (hidden.float() + delta[:, None] * u).to(hidden.dtype)
    hidden.copy_(torch.where(moved, new, hidden))


def _fake(hidden, residual, token_row, row_dir, row_lo, row_hi, dirs, active, layer):
    return None


def _clamp_apply_cuda(hidden, residual, token_row, row_dir, row_lo, row_hi, dirs, active,
                      layer):
    clamp_rows(hidden, residual, token_row, row_dir, row_lo, row_hi, dirs, layer)


LIB.impl("clamp_apply", clamp_apply, "CPU")
LIB.impl("clamp_apply", _clamp_apply_cuda, "CUDA")  # not run here: no GPU was lent
torch.library.register_fake("vsteer_clamp::clamp_apply", _fake, lib=LIB)
