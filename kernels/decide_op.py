"""`torch.ops.vsteer.decide`: the op boundary for host-side jobs between two layers
(refusal controllers, MLP hallucination probes, early-exit checks), so compiled graphs
keep calling it at every layer.

Semantics: `plugins/decision.py`, `plugins/probe_run.py`, `plugins/early_exit.py`.
The op forwards to the runtime registered under `handle`; it may mutate the slot table
(`vectors`, `inv_norms`) and the CPU `step` record (so kernels drop work cached for
this step). It does nothing unless a job is due at this layer in this step. These jobs
read back to the host, so on CUDA they run in eager engines only (the runtime refuses
them otherwise); guards, linear probes and per-token scores are device-table jobs
(`score_jobs`) instead. Verified on CPU only.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from vsteer.kernels.library import LIB

LIB.define(
    "decide(Tensor(a!) vectors, Tensor(b!) inv_norms, Tensor(c!) step, Tensor hidden, "
    "Tensor? residual, int layer, int handle) -> ()"
)

Decider = Callable[[int, torch.Tensor, torch.Tensor | None], None]
_deciders: dict[int, Decider] = {}


def register_decider(fn: Decider) -> int:
    handle = len(_deciders) + 1
    _deciders[handle] = fn
    return handle


def _decide_impl(vectors, inv_norms, step, hidden, residual, layer, handle):
    fn = _deciders.get(handle)
    if fn is not None:
        fn(layer, hidden, residual)


def _decide_fake(vectors, inv_norms, step, hidden, residual, layer, handle):
    return None


LIB.impl("decide", _decide_impl, "CPU")
LIB.impl("decide", _decide_impl, "CUDA")
torch.library.register_fake("vsteer::decide", _decide_fake, lib=LIB)
