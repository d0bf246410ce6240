"""Plain-torch reference of the batched steering op (the oracle for every kernel).

Semantics (per call, at one layer `l`; x[t] = hidden[t] + residual[t] is the stream):
    if step[0] == 0: return                      # host-side flag, no device sync
    for t in range(T):
        r = token_row[t]
        if r < 0: continue                       # token untouched, bit for bit
        for k in range(K):                       # entries compose in order
            s = row_slot[r, k]
            if s <= 0 or inv_norm[s, l] == 0: continue   # empty entry / no direction here
            c, v = row_scale[r, k], vectors[s, l]
            op = row_op[r, k]
            if op == ADD:            hidden[t] += c * v
            if op == ABLATE:         d = v * inv_norm[s, l]; hidden[t] -= c * (x[t]·d) d
            if op == ADD_NORMALIZED: y = x[t] + c * v; hidden[t] = y * |x[t]| / |y| - residual[t]
Arithmetic is fp32; hidden is rounded back to its dtype once, after all entries.
"""

from __future__ import annotations

import torch

OP_ADD = 0
OP_ABLATE = 1
OP_ADD_NORMALIZED = 2
OP_CODES = {"add": OP_ADD, "ablate": OP_ABLATE, "add_normalized": OP_ADD_NORMALIZED}


def steer_apply_reference(
    hidden: torch.Tensor,  # [T, H], modified in place
    residual: torch.Tensor | None,  # [T, H] or None (stream == hidden)
    token_row: torch.Tensor,  # [>=T] int32, -1 = untouched
    row_slot: torch.Tensor,  # [R, K] int32, 0 = empty entry
    row_scale: torch.Tensor,  # [R, K] float32
    row_op: torch.Tensor,  # [R, K] int32
    vectors: torch.Tensor,  # [S, L, H]
    inv_norms: torch.Tensor,  # [S, L] float32
    step: torch.Tensor,  # [3] int64 on CPU: (steered tokens, step serial, rows epoch)
    layer: int,
) -> None:
    if int(step[0]) == 0:
        return
    num_tokens = hidden.shape[0]
    rows = token_row[:num_tokens]
    sel = torch.nonzero(rows >= 0).squeeze(1)  # [n]
    if sel.numel() == 0:
        return
    r = rows[sel].long()  # [n]
    slots = row_slot[r].long()  # [n, K]
    scales = row_scale[r]  # [n, K]
    ops = row_op[r]  # [n, K]
    h = hidden[sel].float()  # [n, H]
    res = residual[sel].float() if residual is not None else None  # [n, H]
    for k in range(slots.shape[1]):
        s = slots[:, k]  # [n]
        inv = inv_norms[s, layer]  # [n]
        active = (s > 0) & (inv > 0)  # [n]
        if not bool(active.any()):
            continue
        v = vectors[s, layer].float()  # [n, H]
        c = scales[:, k].unsqueeze(1)  # [n, 1]
        op = ops[:, k].unsqueeze(1)  # [n, 1]
        x = h + res if res is not None else h  # [n, H]
        added = h + c * v
        d = v * inv.unsqueeze(1)  # unit direction, [n, H]
        ablated = h - c * (x * d).sum(dim=1, keepdim=True) * d
        y = x + c * v
        ratio = x.norm(dim=1, keepdim=True) / y.norm(dim=1, keepdim=True).clamp_min(1e-12)
        normalized = y * ratio - (res if res is not None else 0.0)
        new = torch.where(op == OP_ADD, added, torch.where(op == OP_ABLATE, ablated, normalized))
        h = torch.where(active.unsqueeze(1), new, h)
    hidden[sel] = h.to(hidden.dtype)
