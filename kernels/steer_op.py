"""`torch.ops.vsteer.steer_apply`: the custom-op boundary of batched steering.

Registered through `torch.library.Library` with an explicit schema, one kernel per
device type and a fake impl, so torch.compile and CUDA graphs treat it as one opaque
op that mutates `hidden` in place. (`torch.library.custom_op` adds ~35 µs of Python
dispatch per call, paid at every layer of every step; this path costs a few µs.)

`step` is a CPU int64 record (steered tokens this step, step serial, rows epoch, ...): the
serial changes every step and the epoch whenever a row is written, so implementations
may cache per-step work on the serial and per-row work on the epoch. The
implementation is chosen per device by `vsteer.kernels.dispatch` (`steer_cpu` on CPU,
Triton on CUDA). Semantics: `steer_reference.py`.
"""

from __future__ import annotations

import torch

from vsteer.kernels.dispatch import steer_backend
from vsteer.kernels.library import LIB

LIB.define(
    "steer_apply(Tensor(a!) hidden, Tensor? residual, Tensor token_row, Tensor row_slot, "
    "Tensor row_scale, Tensor row_op, Tensor vectors, Tensor inv_norms, Tensor step, "
    "int layer) -> ()"
)


def _steer_apply_by_device(hidden, residual, token_row, row_slot, row_scale, row_op, vectors,
                           inv_norms, step, layer):
    steer_backend(hidden.device).fn(hidden, residual, token_row, row_slot, row_scale, row_op,
                                    vectors, inv_norms, step, layer)


def _steer_apply_fake(hidden, residual, token_row, row_slot, row_scale, row_op, vectors,
                      inv_norms, step, layer):
    return None


# CPU binds its kernel directly (this call runs at every layer of every step). CUDA
# looks the backend up per call: under CUDA graphs Python only runs at capture time.
LIB.impl("steer_apply", steer_backend(torch.device("cpu")).fn, "CPU")
LIB.impl("steer_apply", _steer_apply_by_device, "CUDA")
torch.library.register_fake("vsteer::steer_apply", _steer_apply_fake, lib=LIB)
