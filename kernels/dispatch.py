"""Which implementation runs each kernel op on a given device type.

CPU runs torch code (`steer_cpu`, `jobs_cpu`); CUDA runs the Triton kernels when
`triton` imports, else the references. The choice is logged once per (op, device) and
exported by the server as `vsteer_kernel_backend`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import torch

from vsteer.kernels.jobs_cpu import score_jobs_cpu
from vsteer.kernels.jobs_reference import score_jobs_reference
from vsteer.kernels.steer_cpu import steer_apply_cpu
from vsteer.kernels.steer_reference import steer_apply_reference

log = logging.getLogger("vsteer.kernels")
OPS = ("steer_apply", "score_jobs")


@dataclass(frozen=True)
class Backend:
    name: str
    fn: Callable[..., None]


REFERENCES = {
    "steer_apply": Backend("torch-reference", steer_apply_reference),
    "score_jobs": Backend("torch-reference", score_jobs_reference),
}
_BACKENDS: dict[tuple[str, str], Backend] = {
    ("steer_apply", "cpu"): Backend("torch-cpu", steer_apply_cpu),
    ("score_jobs", "cpu"): Backend("torch-cpu", score_jobs_cpu),
}
_logged: set[tuple[str, str]] = set()


def _register_triton() -> None:
    try:
        from vsteer.kernels.jobs_triton import score_jobs_triton
        from vsteer.kernels.steer_triton import steer_apply_triton
    except ImportError as e:  # no triton: CUDA falls back to the references
        log.info("vsteer: Triton kernels unavailable (%s)", e)
        return
    _BACKENDS[("steer_apply", "cuda")] = Backend("triton", steer_apply_triton)
    _BACKENDS[("score_jobs", "cuda")] = Backend("triton", score_jobs_triton)


def backend(op: str, device: torch.device | str) -> Backend:
    dtype = torch.device(device).type
    chosen = _BACKENDS.get((op, dtype), REFERENCES[op])
    if (op, dtype) not in _logged:
        _logged.add((op, dtype))
        log.info("vsteer %s on %s uses %s", op, dtype, chosen.name)
    return chosen


def steer_backend(device: torch.device | str) -> Backend:
    return backend("steer_apply", device)


_register_triton()
