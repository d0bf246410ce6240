"""The runtime's shared step tables, as a control sees them (`WorkerContext.tables`).

A control may use these instead of bringing a per-layer op of its own:

    slot table   [S+1, L, H] steering vectors (plugins/slot_table.py). Each request's
                 token-plan row lists its entries; the `steer_apply` op applies them.
                 A *private* slot is steered by one engine request only and is zero
                 until something writes into it: a job that fires inside the forward
                 (`force`), or a host job (`write_force`).
    job table    rows the `score_jobs` op evaluates at their layer, every step: a
                 cosine or a sigmoid-linear score of one row or of a pool of rows
                 (plugins/job_table.py; semantics: kernels/jobs_reference.py). No
                 read-back inside the forward: results leave after the step
                 (plugins/result_mailbox.py) and reach `on_result` on the reader thread.
    host jobs    Python called between two layers with the stream (eager engines;
                 compiled CPU engines through the `decide` op; never under CUDA
                 graphs: `require_host_jobs`).

A job's results go into the step's single report message, under the control's name,
for the request the job belongs to (`StepOut`): `out.value` is a dict, merged with what
`collect` returned for that request and step, and `out.error(code, message)` a coded
entry of the reply's `control.errors`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from vsteer.plugins.api import ControlSetupError, RequestRows
from vsteer.plugins.job_table import JobTable
from vsteer.plugins.lru_index import TableFull
from vsteer.plugins.slot_table import PRIVATE_KEY_PREFIX, SlotTable
from vsteer.plugins.step_report import StepReport


class StepOut:
    """One request's entry of one step's report, under one control's name."""

    __slots__ = ("_report", "_rid", "_choice", "_name")

    def __init__(self, report: StepReport, rid: str, choice: int, name: str) -> None:
        self._report, self._rid, self._choice, self._name = report, rid, choice, name

    @property
    def value(self) -> dict[str, Any]:
        entry = self._report.entry(self._rid, self._choice)
        v = entry.get(self._name)
        if not isinstance(v, dict):
            v = entry[self._name] = {}
        return v

    def error(self, code: str, message: str) -> None:
        self._report.error(self._rid, self._choice, code, message)


# A job's result: (score, fired, out). A host job: (hidden [T, H], residual [T, H] | None,
# out) -> whether it wrote into a slot (the step's steering must then be re-read).
OnResult = Callable[[float, bool, StepOut], None]
HostJob = Callable[[torch.Tensor, "torch.Tensor | None", StepOut], bool]


@dataclass
class _SettingUp:
    rc: Any  # plugins/request_controls.RequestControls
    pinned: set[str]  # keys held by live requests (never evicted for this one)


class SharedTables:
    """Owned by the runtime: the tables, this step's report and host jobs."""

    def __init__(self, slots: SlotTable, jobs: JobTable, graphs: bool, device: torch.device
                 ) -> None:
        self.slots, self.jobs, self.graphs = slots, jobs, graphs
        self.report = StepReport(0)
        self.pending: dict[int, list[Callable[[torch.Tensor, Any], bool]]] = {}
        self.always = torch.ones(1, dtype=torch.float32, device=device)  # a fired flag
        self.fired = jobs.out[:, 1]  # [J] this step's jobs' fired flags (one view)
        self._setting_up: _SettingUp | None = None

    def view(self, name: str) -> ControlTables:
        return ControlTables(self, name)

    @contextmanager
    def setting_up(self, rc: Any, pinned: set[str]) -> Iterator[None]:
        """The request whose controls are being set up (what setup-time calls pin to)."""
        self._setting_up = _SettingUp(rc, pinned)
        try:
            yield
        finally:
            self._setting_up = None

    def request(self) -> _SettingUp:
        if self._setting_up is None:
            raise RuntimeError("shared slots and weight rows are taken in setup()")
        return self._setting_up

    # -- the runtime, per step ----------------------------------------------------------
    def begin_step(self, report: StepReport) -> None:
        self.report = report

    def run_due(self, layer: int, hidden: torch.Tensor, residual: torch.Tensor | None
                ) -> bool:
        """Run the host jobs due after `layer`; True if one wrote into a slot."""
        due = self.pending.pop(layer, None)
        return bool(due) and any([job(hidden, residual) for job in due])  # every job runs

    def end_step(self) -> None:
        self.pending.clear()


class ControlTables:
    """The shared tables as one control uses them (its results go under its name)."""

    def __init__(self, shared: SharedTables, name: str) -> None:
        self._t, self.name = shared, name

    # -- in setup(): what the request holds until it finishes ----------------------------
    def slot(self, key: str, load: Callable[[], dict[int, np.ndarray]]) -> int:
        """A shared slot holding `key`'s vectors (layer -> [H]), loaded on first use."""
        return self._hold(key, lambda pinned: self._t.slots.acquire(key, load, pinned))

    def private_slot(self) -> int:
        """A zeroed slot only this engine request steers with, at every position of it,
        after the entries set up before it."""
        rc = self._t.request().rc
        key = f"{PRIVATE_KEY_PREFIX}{rc.spec.rid}:{rc.choice}:{self.name}"
        # no vectors: zero at every layer; an entry (not rc.keys) pins it to the request
        slot = self._hold(key, lambda pinned: self._t.slots.acquire(key, dict, pinned),
                          keep=False)
        rc.add_entry(key, slot, 1.0, "add", "all")
        return slot

    def weight_row(self, key: str, load: Callable[[], np.ndarray]) -> int:
        """The job table's fp32 weight row holding `key`'s [H] vector."""
        return self._hold(key, lambda pinned: self._t.jobs.weight_row(key, load, pinned))

    def _hold(self, key: str, take: Callable[[set[str]], int], keep: bool = True) -> int:
        """take(pinned) a table row for `key`, then pin it for the request being set up
        (`keep`: among its keys; a steering entry adds its own)."""
        req = self._t.request()
        try:
            row = take(req.pinned)
        except TableFull as e:
            raise ControlSetupError(str(e)) from e
        req.pinned.add(key)
        if keep:
            req.rc.keys.append(key)
        return row

    def alloc_acc(self) -> int:
        """An accumulator row (a pool that spans prefill chunks); give it back with
        `free_acc` in release()."""
        try:
            return self._t.jobs.alloc_acc()
        except TableFull as e:
            raise ControlSetupError(str(e)) from e

    def free_acc(self, row: int) -> None:
        self._t.jobs.free_acc(row)

    def require_host_jobs(self, what: str) -> None:
        require_host_jobs(self._t.graphs, what)

    # -- in plan(): this step -------------------------------------------------------------
    def add_job(self, rows: RequestRows, on_result: OnResult | None = None, **job: Any
                ) -> int:
        """A job-table row (JobTable.add's keywords: layer, start, end, kind, weight_row,
        pool, bias, threshold, acc_row, first, final, count, force); `on_result(score,
        fired, out)` runs after the step once the job scores. Returns its row: its
        fired flag is `fired_flag(row)` on the device during this step's sampling."""
        out = StepOut(self._t.report, rows.rid, rows.choice, self.name)
        cb = None if on_result is None else (lambda s, f: on_result(s, f, out))
        return self._t.jobs.add(**job, on_result=cb)

    def host_job(self, rows: RequestRows, layer: int, job: HostJob) -> None:
        """`job(hidden, residual, out)` after `layer` in this step's forward."""
        out = StepOut(self._t.report, rows.rid, rows.choice, self.name)
        self._t.pending.setdefault(layer, []).append(lambda h, r: job(h, r, out))

    def fired_flag(self, job: int) -> tuple[torch.Tensor, int]:
        """(device tensor, index): above 0 once job `job` of this step has fired."""
        return self._t.fired, job

    @property
    def always(self) -> tuple[torch.Tensor, int]:
        """A flag that is always set (a decision the host already knows fired)."""
        return self._t.always, 0

    def write_force(self, source: int, target: int, coeff: dict[int, float]) -> None:
        """vectors[target, l] = coeff[l] * vectors[source, l] (a host job's force)."""
        write_force(source, target, coeff, self._t.slots.vectors, self._t.slots.inv_norms)


def require_host_jobs(graphs: bool, what: str) -> None:
    """Host jobs run between two layers through the `decide` op, which calls back into
    Python: torch.compile keeps calling it every step, CUDA graphs (`graphs`) do not."""
    if graphs:
        raise ControlSetupError(
            f"{what} runs on the host between two layers, which CUDA graphs do not "
            "replay: serve with --enforce-eager to use it")


def write_force(source_slot: int, target_slot: int, coeff: dict[int, float],
                vectors: torch.Tensor, inv_norms: torch.Tensor) -> None:
    """vectors[target, l] = coeff[l] * vectors[source, l] (in place): a fired decision's
    force, written into the request's private slot."""
    for la, c in coeff.items():
        if c == 0.0:
            continue
        vectors[target_slot, la] = (vectors[source_slot, la].float() * c).to(vectors.dtype)
        inv_norms[target_slot, la] = inv_norms[source_slot, la] / abs(c)


def stream_rows(hidden: torch.Tensor, residual: torch.Tensor | None,
                rows: torch.Tensor | int) -> torch.Tensor:
    """The residual stream (hidden + residual) at `rows`, fp32: [n, H] ([H] for one)."""
    x = hidden[rows].float()
    return x + residual[rows].float() if residual is not None else x
