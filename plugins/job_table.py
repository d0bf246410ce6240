"""This step's in-forward decisions as a fixed-capacity device table, for the
`score_jobs` op (semantics: vsteer/kernels/jobs_reference.py).

The host fills rows before the forward (one upload, like the token plan); every layer
then runs the same op over the whole table, so CUDA graphs replay it with new
contents and nothing in the forward pass reads back to the host. Scores leave the
device after the forward through the runtime's ResultMailbox (a non-blocking copy,
read once its event completes: plugins/result_mailbox.py). Probe weights and guard
conditions live in an fp32 weight table (rows by content key, LRU, pinned while a
request holds them); mean-pooled probes that span prefill chunks keep their running
sum in an accumulator row.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

from vsteer.kernels.jobs_op import JOB_ROWS
from vsteer.kernels.jobs_reference import (
    ACC_ROW,
    BIAS,
    COUNT,
    END,
    FINAL,
    FIRST,
    KIND,
    LAYER,
    NUM_FLOAT_COLUMNS,
    NUM_INT_COLUMNS,
    POOL,
    POOL_LAST,
    SOURCE,
    START,
    TARGET,
    THRESHOLD,
    WEIGHT_ROW,
    build_layer_index,
)
from vsteer.plugins.device_buffer import HostDeviceBuffer
from vsteer.plugins.lru_index import LruIndex, TableFull
from vsteer.plugins.result_mailbox import ResultMailbox

Force = tuple[int, int, dict[int, float]]  # (source slot, target slot, layer -> coeff)
OnResult = Callable[[float, bool], None]


class JobTable:
    def __init__(self, capacity: int, num_layers: int, hidden_size: int, weight_rows: int,
                 acc_rows: int, device: torch.device, step: torch.Tensor) -> None:
        self.capacity = capacity
        self.step = step  # the token plan's CPU step record; step[JOB_ROWS] = rows in use
        self.jobs_i = HostDeviceBuffer(
            torch.full((capacity, NUM_INT_COLUMNS), -1, dtype=torch.int32), device)  # [J, NI]
        self.jobs_f = HostDeviceBuffer(
            torch.zeros(capacity, NUM_FLOAT_COLUMNS, dtype=torch.float32), device)  # [J, NF]
        self.coeff = HostDeviceBuffer(
            torch.zeros(capacity, num_layers, dtype=torch.float32), device)  # [J, L]
        self.num_layers = num_layers
        self.layer_index = HostDeviceBuffer(
            torch.zeros(num_layers + 1 + capacity, dtype=torch.int32), device)  # [L+1+J]
        self.weights = torch.zeros(weight_rows, hidden_size, dtype=torch.float32,
                                   device=device)  # [W, H]
        self.acc = torch.zeros(acc_rows, hidden_size, dtype=torch.float32,
                               device=device)  # [A, H]
        self.out = torch.zeros(capacity, 2, dtype=torch.float32, device=device)  # [J, 2]
        self.weight_index = LruIndex(range(weight_rows), "probe/guard weight rows")
        self._free_acc = list(range(acc_rows - 1, -1, -1))
        self.layers: set[int] = set()  # layers with a job this step
        self._on_result: list[OnResult | None] = []

    # -- tables kept across steps -------------------------------------------------------
    def weight_row(self, key: str, load: Callable[[], np.ndarray], pinned: set[str]) -> int:
        """The weight-table row holding `key`'s [H] vector, loaded on first use."""
        row = self.weight_index.lookup(key)
        if row is None:
            vector = torch.from_numpy(np.ascontiguousarray(load(), np.float32))
            row = self.weight_index.take(key, pinned)
            self.weights[row].copy_(vector)
        return row

    def alloc_acc(self) -> int:
        if not self._free_acc:
            raise TableFull(f"all {self.acc.shape[0]} job accumulators are in use")
        return self._free_acc.pop()

    def free_acc(self, row: int) -> None:
        if row >= 0:
            self._free_acc.append(row)

    # -- this step ----------------------------------------------------------------------
    @property
    def num_jobs(self) -> int:
        return len(self._on_result)

    def add(self, layer: int, start: int, end: int, kind: int, weight_row: int, *,
            pool: int = POOL_LAST, bias: float = 0.0, threshold: float = math.inf,
            acc_row: int = -1, first: bool = True, final: bool = True, count: int = 1,
            force: Force | None = None, on_result: OnResult | None = None) -> int:
        """One job on token rows [start, end) of this step; `on_result(score, fired)` is
        called after the forward when the job scores (mean pooling: its final chunk).
        Returns the job's row (its result is `out[row]` until the next forward)."""
        j = self.num_jobs
        if j == self.capacity:
            raise TableFull(f"all {self.capacity} job rows of this step are in use")
        ints = self.jobs_i.np[j]
        ints[[LAYER, START, END, KIND, POOL, WEIGHT_ROW, ACC_ROW, FIRST, FINAL]] = [
            layer, start, end, kind, pool, weight_row, acc_row, int(first), int(final)]
        ints[[SOURCE, TARGET]] = force[:2] if force is not None else (-1, -1)
        self.jobs_f.np[j, [BIAS, THRESHOLD, COUNT]] = [bias, threshold, count]
        self.coeff.np[j] = 0.0
        if force is not None:
            for la, c in force[2].items():
                if la <= layer:
                    raise ValueError(f"force layer {la} is not after the job's layer {layer}")
                self.coeff.np[j, la] = c
        self._on_result.append(on_result if final or pool == POOL_LAST else None)
        self.layers.add(layer)
        return j

    def commit(self) -> None:
        """Upload this step's rows (rows beyond them are inactive on the device). Their
        results start as NaN: a job whose layer does not run this step (early exit
        skipped it) reports NaN, never a value an earlier step left."""
        n = self.num_jobs
        for buf in (self.jobs_i, self.jobs_f, self.coeff):
            buf.upload(n)
        if n:
            self.out[:n].fill_(float("nan"))
            self.layer_index.np[:] = build_layer_index(self.jobs_i.np[:n, LAYER],
                                                       self.num_layers, self.capacity)
            self.layer_index.upload(self.num_layers + 1 + n)
        self.step[JOB_ROWS] = n

    def finish(self, mailbox: ResultMailbox | None = None,
               then: Callable[[], None] | None = None) -> None:
        """After the forward: the step's results posted to `mailbox` (read off the step's
        path once their copy lands; `then` runs after their callbacks), and the rows made
        inactive on the device (a device write: the host rows may still be in flight to
        it), so warm-up and dummy runs between steps run no job. Nothing is read back
        here."""
        n = self.num_jobs
        if mailbox is not None:
            mailbox.post(self.out, self._on_result, then)
        if n:
            self.jobs_i.device[:n, LAYER] = -1
            self.layer_index.device[: self.num_layers + 1] = 0  # no job at any layer
        self._on_result.clear()
        self.layers.clear()
        self.step[JOB_ROWS] = 0
