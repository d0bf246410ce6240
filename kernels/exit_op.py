"""`torch.ops.vsteer.exit_confidence`: per-token confidence, margin and entropy of the
softmax over logits, written into a preallocated [T, 3] `out`. Semantics:
exit_reference.py."""

from __future__ import annotations

import torch

from vsteer.kernels.dispatch import backend
from vsteer.kernels.library import LIB

LIB.define("exit_confidence(Tensor logits, Tensor(a!) out) -> ()")


def _exit_confidence(logits, out):
    backend("exit_confidence", logits.device).fn(logits, out)


def _exit_confidence_fake(logits, out):
    return None


for _key in ("CPU", "CUDA"):
    LIB.impl("exit_confidence", _exit_confidence, _key)
torch.library.register_fake("vsteer::exit_confidence", _exit_confidence_fake, lib=LIB)
