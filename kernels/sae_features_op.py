"""`torch.ops.vsteer.sae_features`: SAE feature `add` and `clamp` at one layer, for every
token of the step, as one custom op (the `features` control; no read-back).

A feature slot s holds one SAE feature: its decoder row dec[s] [H], its encoder column
enc[s] [H], bias[s] = b_enc[f] - (b_dec · W_enc[:, f] if the SAE subtracts b_dec from
its input), thr[s] (0 for a ReLU SAE, the JumpReLU threshold otherwise) and the layer
it reads and writes, layer_of[s] (-1: empty). Slot 0 stays empty.

Semantics (x = hidden[t] + residual[t], the stream after layer `layer`, fp32):
    if active[layer] == 0: return                    # CPU only: host-side count per layer
    for t in range(T):
        r = token_row[t]
        if r < 0: continue                           # untouched, bit for bit
        h = float32(hidden[t])
        for k in range(K):                           # entries compose in order
            s = row_slot[r, k]
            if s <= 0 or layer_of[s] != layer: continue
            if row_op[r, k] == ADD:   c = row_value[r, k]
            else:                                    # CLAMP: set the activation
                pre = (h + residual[t]) · enc[s] + bias[s]
                act = pre if pre > thr[s] else 0
                c = row_value[r, k] - act
            h += c * dec[s]
        hidden[t] = h rounded to hidden's dtype      (once, after every entry)
`add` is the steering op's `add` with dec[s] as the vector: the same fp32 product and
sum, so for one entry it matches steering bit for bit (tests/test_sae_control.py).
"""

from __future__ import annotations

import torch

from vsteer.kernels.library import LIB

OP_ADD = 0
OP_CLAMP = 1
SAE_OPS = {"add": OP_ADD, "clamp": OP_CLAMP}

LIB.define("sae_features(Tensor(a!) hidden, Tensor? residual, Tensor token_row, "
           "Tensor row_slot, Tensor row_op, Tensor row_value, Tensor dec, Tensor enc, "
           "Tensor bias, Tensor thr, Tensor layer_of, Tensor active, int layer) -> ()")


def sae_features_reference(hidden, residual, token_row, row_slot, row_op, row_value, dec,
                           enc, bias, thr, layer_of, active, layer: int) -> None:
    """The semantics above, token by token (the oracle)."""
    if int(active[layer]) == 0:
        return
    for t in range(hidden.shape[0]):
        r = int(token_row[t])
        if r < 0:
            continue
        h = hidden[t].float()
        res = residual[t].float() if residual is not None else 0.0
        for k in range(row_slot.shape[1]):
            s = int(row_slot[r, k])
            if s <= 0 or int(layer_of[s]) != layer:
                continue
            if int(row_op[r, k]) == OP_ADD:
                c = row_value[r, k]
            else:
                pre = (h + res) @ enc[s] + bias[s]
                c = row_value[r, k] - (pre if pre > thr[s] else torch.zeros_like(pre))
            h = h + c * dec[s]
        hidden[t] = h.to(hidden.dtype)


def sae_features_graph_safe(hidden, residual, token_row, row_slot, row_op, row_value, dec,
                            enc, bias, thr, layer_of, layer: int) -> None:
    """No host branch, no data-dependent shape (CUDA graphs replay it); tokens no entry
    moves keep their bits through a select."""
    T = hidden.shape[0]
    rows = token_row[:T].long()  # [T]
    on_row = rows >= 0
    r = rows.clamp_min(0)
    h = hidden.float()  # [T, H]
    res = residual.float() if residual is not None else None
    moved = torch.zeros(T, dtype=torch.bool, device=hidden.device)
    for k in range(row_slot.shape[1]):
        s = row_slot[r, k].long()  # [T]
        on = on_row & (s > 0) & (layer_of[s] == layer)  # [T]
        d = dec[s]  # [T, H]
        x = h if res is None else h + res
        pre = (x * enc[s]).sum(-1) + bias[s]  # [T]
        act = torch.where(pre > thr[s], pre, torch.zeros_like(pre))
        value = row_value[r, k]
        c = torch.where(row_op[r, k] == OP_ADD, value, value - act)  # [T]
        h = torch.where(on[:, None], h + c[:, None] * d, h)
        moved |= on
    hidden.copy_(torch.where(moved[:, None], h.to(hidden.dtype), hidden))


def _sae_features_cpu(hidden, residual, token_row, row_slot, row_op, row_value, dec, enc,
                      bias, thr, layer_of, active, layer):
    if int(active[layer]):
        sae_features_graph_safe(hidden, residual, token_row, row_slot, row_op, row_value,
                                dec, enc, bias, thr, layer_of, layer)


def _sae_features_cuda(hidden, residual, token_row, row_slot, row_op, row_value, dec, enc,
                       bias, thr, layer_of, active, layer):
    sae_features_graph_safe(hidden, residual, token_row, row_slot, row_op, row_value, dec,
                            enc, bias, thr, layer_of, layer)


def _sae_features_fake(hidden, residual, token_row, row_slot, row_op, row_value, dec, enc,
                       bias, thr, layer_of, active, layer):
    return None


LIB.impl("sae_features", _sae_features_cpu, "CPU")
LIB.impl("sae_features", _sae_features_cuda, "CUDA")  # not run here: no GPU was lent
torch.library.register_fake("vsteer::sae_features", _sae_features_fake, lib=LIB)
