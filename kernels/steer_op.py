"""`torch.ops.vsteer.steer_apply`: the custom-op boundary of batched steering.

Registered with `torch.library` and a fake impl, so torch.compile and CUDA graphs treat
it as one opaque op that mutates `hidden` in place. `step` is a CPU int64 triple
(steered tokens this step, step serial, rows epoch): the serial changes every step and
the epoch whenever a row is written, so implementations may cache per-step work on the
serial and per-row work on the epoch. The
implementation is chosen per device by `vsteer.kernels.dispatch` (`steer_cpu` on CPU,
the reference elsewhere until the Triton kernel lands). Semantics: `steer_reference.py`.
"""

from __future__ import annotations

import torch

from vsteer.kernels.dispatch import steer_backend


@torch.library.custom_op("vsteer::steer_apply", mutates_args=("hidden",))
def steer_apply(
    hidden: torch.Tensor,
    residual: torch.Tensor | None,
    token_row: torch.Tensor,
    row_slot: torch.Tensor,
    row_scale: torch.Tensor,
    row_op: torch.Tensor,
    vectors: torch.Tensor,
    inv_norms: torch.Tensor,
    step: torch.Tensor,
    layer: int,
) -> None:
    steer_backend(hidden.device).fn(
        hidden, residual, token_row, row_slot, row_scale, row_op, vectors, inv_norms, step,
        layer,
    )


@steer_apply.register_fake
def _steer_apply_fake(
    hidden, residual, token_row, row_slot, row_scale, row_op, vectors, inv_norms, step, layer
) -> None:
    return None
