"""`torch.ops.vsteer.probe_score`: probe pooling + scoring as one opaque op writing a
preallocated `out`. Semantics: probe_reference.py."""

from __future__ import annotations

import torch

from vsteer.kernels.dispatch import backend
from vsteer.kernels.library import LIB

LIB.define(
    "probe_score(Tensor hidden, Tensor? residual, Tensor cu_seqlens, Tensor weight, "
    "float bias, int pooling, Tensor(a!) out) -> ()"
)


def _probe_score(hidden, residual, cu_seqlens, weight, bias, pooling, out):
    backend("probe_score", hidden.device).fn(hidden, residual, cu_seqlens, weight, bias,
                                              pooling, out)


def _probe_score_fake(hidden, residual, cu_seqlens, weight, bias, pooling, out):
    return None


for _key in ("CPU", "CUDA"):
    LIB.impl("probe_score", _probe_score, _key)
torch.library.register_fake("vsteer::probe_score", _probe_score_fake, lib=LIB)
