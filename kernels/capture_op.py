"""`torch.ops.vsteer.capture_rows`: copy the residual stream of chosen tokens at one
layer into a preallocated staging buffer (the `capture` control; no read-back).

Semantics (x[t] = hidden[t] + residual[t], the stream after layer `layer`):
    if active[layer] == 0: return          # CPU only: host-side rows per layer
    for t in range(T):
        r = index[layer, t]                # staging row of (token t, this layer)
        if r >= 0: stage[r] = float32(x[t])
    (stage has one extra last row; the graph-safe path writes untouched tokens there)
"""

from __future__ import annotations

import torch

from vsteer.kernels.library import LIB

LIB.define("capture_rows(Tensor hidden, Tensor? residual, Tensor index, Tensor(a!) stage, "
           "Tensor active, int layer) -> ()")


def capture_rows_reference(hidden, residual, index, stage, active, layer: int) -> None:
    """The semantics above, token by token (the oracle)."""
    if int(active[layer]) == 0:
        return
    for t in range(hidden.shape[0]):
        r = int(index[layer, t])
        if r >= 0:
            x = hidden[t].float()
            stage[r] = x + residual[t].float() if residual is not None else x


def capture_rows_graph_safe(hidden, residual, index, stage, layer: int) -> None:
    """No host branch and no data-dependent shape (CUDA graphs replay it): tokens
    not captured are written to the trash row stage[-1]."""
    T = hidden.shape[0]
    rows = index[layer, :T].long()  # [T]
    rows = torch.where(rows < 0, torch.full_like(rows, stage.shape[0] - 1), rows)
    x = hidden.float() if residual is None else hidden.float() + residual.float()  # [T, H]
    stage.index_copy_(0, rows, x)


def _capture_rows_cpu(hidden, residual, index, stage, active, layer):
    if int(active[layer]):
        capture_rows_graph_safe(hidden, residual, index, stage, layer)


def _capture_rows_cuda(hidden, residual, index, stage, active, layer):
    capture_rows_graph_safe(hidden, residual, index, stage, layer)


def _capture_rows_fake(hidden, residual, index, stage, active, layer):
    return None


LIB.impl("capture_rows", _capture_rows_cpu, "CPU")
LIB.impl("capture_rows", _capture_rows_cuda, "CUDA")  # not run here: no GPU was lent
torch.library.register_fake("vsteer::capture_rows", _capture_rows_fake, lib=LIB)
