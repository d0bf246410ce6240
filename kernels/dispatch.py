"""Which implementation runs each kernel op on a given device.

CPU runs `steer_cpu` (per-step caching); any device without a registered kernel runs
the reference. The
chosen backend's name is logged once and exported as a metric label.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import torch

from vsteer.kernels.steer_cpu import steer_apply_cpu
from vsteer.kernels.steer_reference import steer_apply_reference

log = logging.getLogger("vsteer.kernels")


@dataclass(frozen=True)
class Backend:
    name: str
    fn: Callable[..., None]


REFERENCE = Backend("torch-reference", steer_apply_reference)
# device type -> backend; the Triton kernel registers itself for "cuda" when it lands.
_STEER_BACKENDS: dict[str, Backend] = {"cpu": Backend("torch-cpu", steer_apply_cpu)}
_logged: set[str] = set()


def register_steer_backend(device_type: str, backend: Backend) -> None:
    _STEER_BACKENDS[device_type] = backend


def steer_backend(device: torch.device) -> Backend:
    backend = _STEER_BACKENDS.get(device.type, REFERENCE)
    if device.type not in _logged:
        _logged.add(device.type)
        log.info("vsteer steer_apply on %s uses %s", device.type, backend.name)
    return backend
