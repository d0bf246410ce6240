"""Custom ops of the control runtime; importing this module registers them."""

from vsteer.kernels import steer_op  # noqa: F401  (registers torch.ops.vsteer.*)
from vsteer.kernels.steer_reference import OP_CODES, steer_apply_reference

__all__ = ["OP_CODES", "steer_apply_reference"]
