"""The worker half of `refusal` in guard and controller modes (plugins/refusal_control.py):
a decision made inside prefill at the last prompt token (plugins/decision.py), whose
force goes into the request's private slot of the shared slot table.

Per step, the pure `plan_decision` says what the step does for a request's decision:
    guard:      a job-table row over the part of its window (the last `window` prompt
                tokens) this chunk holds; the row of the final chunk scores, and writes
                the force into the private slot on the device when it fires
    controller: a host job at the row of the last prompt token (eager engines)
    after that: nothing (decided once; a recompute after preemption keeps the force)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import msgspec
import torch

from vsteer.artifacts import ArtifactError
from vsteer.kernels.jobs_reference import KIND_COS, KIND_SIGMOID, POOL_LAST, POOL_MEAN
from vsteer.plugins.api import ControlSetupError, RequestRows, WorkerContext, WorkerControl
from vsteer.plugins.artifact_slots import slot_contents
from vsteer.plugins.decision import Decision, decide, load_decision, window_part
from vsteer.plugins.shared_tables import StepOut, stream_rows
from vsteer.wire import WireDecide

NOT_SCORED = "not_scored"  # a job's layer did not run in its step


@dataclass(frozen=True)
class DecisionStep:
    """What one step does for one request's decision."""

    job: dict[str, Any] | None = None  # a job-table row (JobTable.add keywords)
    host_row: int = -1  # controller: the step's row of the last prompt token
    acc_n: int = 0  # guard: window tokens pooled once the job has run
    final: bool = False  # the decision is made in this step


@dataclass
class RefusalState:
    decision: Decision
    prompt_tokens: int


def plan_decision(d: Decision, r: RequestRows, prompt_tokens: int) -> DecisionStep | None:
    """Pure: this step's part of a request's decision (None: nothing this step)."""
    if d.done:
        return None
    if d.weight_row < 0:  # a controller, on the host
        last = prompt_tokens - 1
        if r.position <= last < r.position + (r.end - r.start):
            return DecisionStep(host_row=r.start + last - r.position, final=True)
        return None
    part = window_part(r.position, r.prompt_end - r.start, prompt_tokens, d.window)
    if part is None:
        return None  # this chunk holds none of the window
    lo, hi, starts, final = part
    before = 0 if starts else d.acc_n  # the window starts here (again, on a recompute)
    acc_n = before + hi - lo
    w = d.wire
    force = (d.source_slot, d.target_slot, dict.fromkeys(w.force_layers, w.scale))
    return DecisionStep(job=dict(
        layer=w.layer, start=r.start + lo - r.position, end=r.start + hi - r.position,
        kind=KIND_SIGMOID if d.linear else KIND_COS, weight_row=d.weight_row,
        pool=POOL_MEAN if d.linear else POOL_LAST, bias=d.bias, threshold=w.threshold,
        force=force, acc_row=d.acc_row, first=before == 0, final=final, count=acc_n),
        acc_n=acc_n, final=final)


class RefusalWorker(WorkerControl):
    def __init__(self, ctx: WorkerContext) -> None:
        self.ctx = ctx

    def setup(self, wire: dict[str, Any], prompt_tokens: int) -> RefusalState:
        w = msgspec.convert(wire, WireDecide)
        t, ctx = self.ctx.tables, self.ctx
        try:
            src = t.slot(w.source_key, lambda: slot_contents(
                w.direction_path, w.direction_sha256, "refusal", w.force_layers,
                ctx.fingerprint, ctx.tp_rank))
            d = load_decision(w, src, t.private_slot(), ctx.device)
        except (ArtifactError, OSError) as err:
            raise ControlSetupError(f"{w.kind}: {err}") from err
        if d.condition is None:
            t.require_host_jobs("a refusal controller")
        else:
            d.weight_row = t.weight_row(f"guard:{w.direction_sha256}@{w.layer}",
                                        lambda: d.condition)
            if d.window > 1:
                d.acc_row = t.alloc_acc()
        return RefusalState(d, prompt_tokens)

    def release(self, state: RefusalState) -> None:
        self.ctx.tables.free_acc(state.decision.acc_row)

    def plan(self, rows: list[RequestRows]) -> None:
        t = self.ctx.tables
        for r in rows:
            d = r.state.decision
            step = plan_decision(d, r, r.state.prompt_tokens)
            if step is None:
                continue
            if step.job is not None:
                done = (lambda s, f, out, d=d: _record(d, s, f, out)) if step.final else None
                t.add_job(r, done, **step.job)
                d.acc_n, d.done = step.acc_n, step.final
            else:
                t.host_job(r, d.wire.layer, lambda h, res, out, d=d, row=step.host_row:
                           self._control(d, h, res, row, out))

    def _control(self, d: Decision, hidden: torch.Tensor, residual: torch.Tensor | None,
                 row: int, out: StepOut) -> bool:
        coeff = decide(d, stream_rows(hidden, residual, row))
        if coeff:
            self.ctx.tables.write_force(d.source_slot, d.target_slot, coeff)
        _record(d, d.score, d.fired, out)
        return bool(coeff)


def _record(d: Decision, score: float, fired: bool, out: StepOut) -> None:
    """The decision's result in the step's report (a layer that did not run is a coded
    error, never a NaN or a silent null)."""
    if math.isnan(score):
        out.error(NOT_SCORED, "refusal guard was not scored: its layer did not run")
        return
    d.score, d.fired = score, fired
    out.value["decision"] = {"kind": d.wire.kind, "score": score, "fired": fired}
