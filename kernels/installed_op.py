"""`torch.ops.vsteer.installed_layer`: on CPU engines in compiled mode, one op boundary
per layer for every installed control (plugins/api.py), instead of one per control.

Semantics: if any[0] == 0 (a host-side count: no installed control has rows this
step) return; else call the runtime registered under `handle`, which runs each
installed control's own per-layer op. Idle steps cost one dispatch per layer. CUDA
engines do not use it: captured graphs must replay every control's own graph-safe op
(each reads its device tables, not a host count), so the runtime calls them directly.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from vsteer.kernels.library import LIB

LIB.define("installed_layer(Tensor(a!) hidden, Tensor? residual, Tensor any, int layer, "
           "int handle) -> ()")

LayerFn = Callable[[int, torch.Tensor, torch.Tensor | None], None]
_runners: dict[int, LayerFn] = {}


def register_runner(fn: LayerFn) -> int:
    handle = len(_runners) + 1
    _runners[handle] = fn
    return handle


def _installed_layer_cpu(hidden, residual, any_, layer, handle):
    if int(any_[0]):
        fn = _runners.get(handle)
        if fn is not None:
            fn(layer, hidden, residual)


def _installed_layer_fake(hidden, residual, any_, layer, handle):
    return None


LIB.impl("installed_layer", _installed_layer_cpu, "CPU")
torch.library.register_fake("vsteer::installed_layer", _installed_layer_fake, lib=LIB)
