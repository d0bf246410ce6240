"""The worker half of `hallucination` (plugins/hallucination_control.py): a probe scored
inside prefill, over the prompt (plugins/probe_run.py), and optionally a per-token
probe at every sampled token, through the shared tables.

Per step, the pure `plan_probe` says what the step does for a request's probe:
    prefill, linear probe: a job-table row over this chunk's prompt rows (mean pooling
        accumulates across chunks; last-token pooling needs only the final chunk); the
        final chunk's row scores, and (mitigate) writes the truth direction into the
        request's private slot on the device when it fires
    prefill, MLP probe:    a host job over the chunk (eager engines)
    per_token:             a job-table row at the row that samples the step's token
Results per step, under `hallucination`: {"probe": {score, fired, action}} once, and
{"token": score} at each sampled token (null, with one coded `not_scored` error, where
early exit left before the token layer). `abstain` ends the request through the sampler
(`ends_request`): the final job's fired flag on the device, read before this very
step's sampling.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import msgspec
import torch

from vsteer.artifacts import ArtifactError
from vsteer.kernels.jobs_reference import KIND_SIGMOID, POOL_LAST
from vsteer.plugins.api import ControlSetupError, RequestRows, WorkerContext, WorkerControl
from vsteer.plugins.artifact_slots import slot_contents
from vsteer.plugins.probe_run import ProbeRun, load_probe_run, mlp_prefill, table_job
from vsteer.plugins.shared_tables import StepOut
from vsteer.wire import WireProbe

NOT_SCORED = "not_scored"  # a job's layer did not run in its step (early exit)


@dataclass(frozen=True)
class ProbeStep:
    """What one step does for one request's probe."""

    prefill: dict[str, Any] | None = None  # a job-table row over this chunk's prompt rows
    final: bool = False  # the prefill probe scores in this step
    acc_n: int | None = None  # prompt tokens pooled once the job has run (None: unchanged)
    host: tuple[int, int] | None = None  # MLP probe: prompt rows a..b, on the host
    token: dict[str, Any] | None = None  # per-token score at the sampling row


def plan_probe(run: ProbeRun, r: RequestRows, prompt_tokens: int) -> ProbeStep:
    """Pure: this step's part of a request's probe."""
    prefill, final, acc_n, host, token = None, False, None, None, None
    if not run.done and r.prompt_end > r.start:
        final = r.position + (r.prompt_end - r.start) >= prompt_tokens
        if run.weight_row >= 0:
            prefill, acc_n = table_job(run, r.start, r.prompt_end, final,
                                       restart=r.position == 0)
            if prefill is not None and run.wire.action == "mitigate":
                prefill["force"] = (run.source_slot, run.target_slot,
                                    dict.fromkeys(run.wire.mitigate_layers, run.wire.scale))
        else:
            host = (r.start, r.prompt_end)
    if run.token_row >= 0 and r.samples:
        token = dict(layer=run.token_layer, start=r.end - 1, end=r.end, kind=KIND_SIGMOID,
                     weight_row=run.token_row, pool=POOL_LAST, bias=run.probe.token_bias)
    return ProbeStep(prefill, final, acc_n, host, token)


class HallucinationWorker(WorkerControl):
    ends = True  # abstain

    def __init__(self, ctx: WorkerContext) -> None:
        self.ctx = ctx

    def setup(self, wire: dict[str, Any], prompt_tokens: int) -> ProbeRun:
        w = msgspec.convert(wire, WireProbe)
        t, ctx = self.ctx.tables, self.ctx
        try:
            run = load_probe_run(w, ctx.device)
            if (why := run.probe.fingerprint.mismatch(ctx.fingerprint)) is not None:
                raise ArtifactError(why)
        except (ArtifactError, OSError) as err:
            raise ControlSetupError(str(err)) from err
        run.prompt_tokens = prompt_tokens
        p = run.probe
        try:
            if p.probe_type == "linear":
                run.weight_row = t.weight_row(f"probe:{w.sha256}", lambda: p.tensors["weight"])
                if p.pooling == "mean":
                    run.acc_row = t.alloc_acc()
            else:
                t.require_host_jobs("an MLP hallucination probe")
            if w.per_token and p.token_weight is not None:
                run.token_row = t.weight_row(f"probe-token:{w.sha256}",
                                             lambda: p.token_weight)
            if w.action == "mitigate":
                try:
                    run.source_slot = t.slot(w.source_key, lambda: slot_contents(
                        w.path, w.sha256, "truth", w.mitigate_layers, ctx.fingerprint,
                        ctx.tp_rank))
                except (ArtifactError, OSError) as err:
                    raise ControlSetupError(str(err)) from err
                run.target_slot = t.private_slot()
        except ControlSetupError:
            t.free_acc(run.acc_row)
            raise
        return run

    def release(self, run: ProbeRun) -> None:
        self.ctx.tables.free_acc(run.acc_row)

    def plan(self, rows: list[RequestRows]) -> None:
        t = self.ctx.tables
        for r in rows:
            run: ProbeRun = r.state
            run.job = -1
            step = plan_probe(run, r, run.prompt_tokens)
            if step.prefill is not None:
                done = (lambda s, f, out, run=run: _probed(run, s, f, out)) if step.final \
                    else None
                j = t.add_job(r, done, **step.prefill)
                if step.final:
                    run.job = j
            if step.acc_n is not None:
                run.acc_n, run.done = step.acc_n, step.final
            if step.host is not None:
                a, b = step.host
                t.host_job(r, run.layer, lambda h, res, out, run=run, a=a, b=b, f=step.final:
                           self._mlp(run, h, res, a, b, f, out))
            if step.token is not None:
                t.add_job(r, lambda s, f, out, run=run: _token_scored(run, s, out),
                          **step.token)

    def ends_request(self, run: ProbeRun) -> tuple[torch.Tensor, int] | None:
        """abstain: the request's next token is its end once its probe fired (known on
        the host, or this step's final job's flag on the device)."""
        if run.wire.action != "abstain":
            return None
        if run.fired:
            return self.ctx.tables.always
        if run.job >= 0:
            return self.ctx.tables.fired_flag(run.job)
        return None

    def _mlp(self, run: ProbeRun, hidden: torch.Tensor, residual: torch.Tensor | None,
             a: int, b: int, final: bool, out: StepOut) -> bool:
        if not mlp_prefill(run, hidden, residual, a, b, final):
            return False
        _probed(run, run.score, run.fired, out)
        if run.fired and run.wire.action == "mitigate":
            self.ctx.tables.write_force(run.source_slot, run.target_slot, dict.fromkeys(
                run.wire.mitigate_layers, run.wire.scale))
            return True
        return False


def _probed(run: ProbeRun, score: float, fired: bool, out: StepOut) -> None:
    if math.isnan(score):  # never expected: prefill steps do not exit early
        out.error(NOT_SCORED, "hallucination probe was not scored: its layer did not run")
        return
    run.score, run.fired = score, fired
    out.value["probe"] = {"score": score, "fired": fired, "action": run.wire.action}


def _token_scored(run: ProbeRun, score: float, out: StepOut) -> None:
    value: float | None = score
    if math.isnan(score):  # the token layer did not run: the step exited before it
        value = None
        if not run.told_unscored:
            run.told_unscored = True
            out.error(NOT_SCORED, (
                "per-token hallucination scores are null for tokens that exited "
                f"before the probe's layer {run.token_layer} (early exit)"))
    out.value["token"] = value
