"""`torch.ops.vsteer.score_jobs`: in-forward decisions (refusal guards, linear
hallucination probes, per-token probe scores) from a fixed-capacity job table, as one
opaque op per layer. Semantics: jobs_reference.py.

`step` is the runtime's CPU int64 step record (steered tokens, step serial, rows
epoch, job rows in use). The CPU implementation reads only the first step[3] table
rows, and on a force write takes a new serial and epoch, so `steer_cpu` drops deltas it
cached from the slot table. The CUDA implementation ignores `step`: its launch depends
only on shapes, so CUDA graphs replay it with new tables; it finds the layer's jobs
through `layer_index` (jobs_reference.build_layer_index), so an idle layer costs two
loads per program.
"""

from __future__ import annotations

import torch

from vsteer.kernels.dispatch import backend
from vsteer.kernels.library import LIB
from vsteer.kernels.stamps import next_stamp

LIB.define(
    "score_jobs(Tensor hidden, Tensor? residual, Tensor jobs_i, Tensor jobs_f, Tensor coeff, "
    "Tensor layer_index, Tensor weights, Tensor(a!) acc, Tensor(b!) vectors, Tensor(c!) inv_norms, "
    "Tensor(d!) out, Tensor(e!) step, int layer) -> ()"
)
JOB_ROWS = 3  # index into `step`


def _score_jobs_cpu_op(hidden, residual, jobs_i, jobs_f, coeff, layer_index, weights, acc,
                       vectors, inv_norms, out, step, layer) -> None:
    n = int(step[JOB_ROWS])
    if n == 0:
        return
    forced = backend("score_jobs", hidden.device).fn(
        hidden, residual, jobs_i[:n], jobs_f[:n], coeff[:n], layer_index, weights, acc,
        vectors, inv_norms, out[:n], layer)
    if forced:  # slot contents changed: new step serial and rows epoch
        step[1] = next_stamp()
        step[2] = next_stamp()


def _score_jobs_cuda(hidden, residual, jobs_i, jobs_f, coeff, layer_index, weights, acc,
                     vectors, inv_norms, out, step, layer) -> None:
    backend("score_jobs", hidden.device).fn(hidden, residual, jobs_i, jobs_f, coeff,
                                             layer_index, weights, acc, vectors, inv_norms,
                                             out, layer)


def _score_jobs_fake(hidden, residual, jobs_i, jobs_f, coeff, layer_index, weights, acc,
                     vectors, inv_norms, out, step, layer) -> None:
    return None


LIB.impl("score_jobs", _score_jobs_cpu_op, "CPU")
LIB.impl("score_jobs", _score_jobs_cuda, "CUDA")
torch.library.register_fake("vsteer::score_jobs", _score_jobs_fake, lib=LIB)
