"""The step planner: a pure function from one engine step's batch and the live requests'
controls to the writes the runtime makes into its step tables.

    plan_step(view, requests) -> StepPlan

It reads the requests' controls and changes nothing: rows are named, not allocated
(`RowWrite`), job-table rows are described (`TableJob`), host-side jobs are listed by
layer (`HostJob`), and what a prefill job has consumed so far comes back as `Progress`
for the runtime to store. So every scheduling rule (chunked prefill, preemption and
recompute, decode beside another request's prefill, `n > 1`, per-token scores) is
unit-tested on synthetic steps (tests/test_step_planner.py), without vLLM.

Rows of request i in this step: a..b (token rows), positions p..p+(b-a); rows a..split
are prompt tokens, split..b generated ones. Steering reads positions, not rows: each of
the request's segments (plugins/position_window.py) covers the rows whose positions it
holds. The step samples a token for the request
iff its last scheduled position reaches every token it has (prompt + output): a
recompute after preemption, or a non-final prefill chunk, samples nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from vsteer.kernels.jobs_reference import KIND_COS, KIND_SIGMOID, POOL_LAST, POOL_MEAN
from vsteer.plugins.decision import window_part
from vsteer.plugins.probe_control import table_job
from vsteer.plugins.request_controls import RequestControls


@dataclass(frozen=True)
class Part:
    """One controlled request's rows in this step."""

    rid: str
    choice: int
    a: int
    b: int
    p: int
    split: int
    samples: bool  # row b - 1 samples this request's next token


@dataclass(frozen=True)
class RowWrite:
    """Token rows [start, end) read the row of the request's steering segment `segment`
    (RequestControls.segments; plugins/position_window.py)."""

    rid: str
    start: int
    end: int
    segment: int


@dataclass(frozen=True)
class TableJob:
    """One job-table row (JobTable.add keywords); `result` names what its score is."""

    rid: str
    result: str  # guard | probe | token_score
    job: dict[str, Any]
    abstain: bool = False  # the sampler masks this request by the job's fired flag


@dataclass(frozen=True)
class HostJob:
    """A host-side job due after `layer` (eager engines only)."""

    rid: str
    layer: int
    kind: str  # controller | mlp_probe
    args: tuple[int, ...]  # controller: (row,); mlp_probe: (a, b, final)


@dataclass(frozen=True)
class Progress:
    """How much of a prefill job's pooled window the request has consumed."""

    rid: str
    target: str  # decision | probe
    acc_n: int
    done: bool


@dataclass
class StepPlan:
    parts: list[Part] = field(default_factory=list)
    rows: list[RowWrite] = field(default_factory=list)
    table_jobs: list[TableJob] = field(default_factory=list)
    host_jobs: list[HostJob] = field(default_factory=list)
    progress: list[Progress] = field(default_factory=list)
    capture: list[tuple[str, int, int, int]] = field(default_factory=list)  # rid, a, split, p


@dataclass(frozen=True)
class StepView:
    """The step's batch in token order (plugins/vllm_compat.step_view builds it)."""

    req_ids: list[str]
    query_start: Any  # [R+1] token offsets of each request in this step
    start_pos: Any  # [R] position of each request's first scheduled token
    num_tokens: Any  # [R] tokens each request has (prompt + output so far)


def plan_step(view: StepView, requests: Mapping[str, RequestControls | None]) -> StepPlan:
    plan = StepPlan()
    for i, rid in enumerate(view.req_ids):
        rc = requests.get(rid)
        a, b, p = int(view.query_start[i]), int(view.query_start[i + 1]), int(view.start_pos[i])
        if rc is None:
            continue
        n_prompt = rc.num_prompt_tokens
        split = a + min(max(n_prompt - p, 0), b - a)
        samples = p + (b - a) >= max(int(view.num_tokens[i]), n_prompt)
        part = Part(rid, rc.choice, a, b, p, split, samples)
        plan.parts.append(part)
        for k, seg in enumerate(rc.segments):
            hit = seg.overlap(p, b - a)
            if hit is not None:
                plan.rows.append(RowWrite(rid, a + hit[0], a + hit[1], k))
        _plan_decision(plan, rc, part)
        _plan_probe(plan, rc, part)
        if rc.spec.capture is not None:
            plan.capture.append((rid, a, split, p))
    return plan


def _plan_decision(plan: StepPlan, rc: RequestControls, s: Part) -> None:
    """A guard: a cosine on the last prompt token, or a linear score on the mean of the
    last `window` prompt tokens accumulated across prefill chunks (job table). A
    controller: a host job at the last prompt token."""
    d = rc.decision
    if d is None or d.done:
        return
    if d.weight_row < 0:
        last = rc.num_prompt_tokens - 1
        if s.p <= last < s.p + (s.b - s.a):
            plan.host_jobs.append(HostJob(s.rid, d.wire.layer, "controller",
                                          (s.a + last - s.p,)))
        return
    part = window_part(s.p, s.split - s.a, rc.num_prompt_tokens, d.window)
    if part is None:
        return  # this chunk holds none of the window
    lo, hi, starts, final = part
    before = 0 if starts else d.acc_n  # the window starts here (again, on a recompute)
    acc_n = before + hi - lo
    force = (d.source_slot, d.target_slot, dict.fromkeys(d.wire.force_layers, d.wire.scale))
    plan.table_jobs.append(TableJob(s.rid, "guard" if final else "", dict(
        layer=d.wire.layer, start=s.a + lo - s.p, end=s.a + hi - s.p,
        kind=KIND_SIGMOID if d.linear else KIND_COS, weight_row=d.weight_row,
        pool=POOL_MEAN if d.linear else POOL_LAST, bias=d.bias, threshold=d.wire.threshold,
        force=force, acc_row=d.acc_row, first=before == 0, final=final, count=acc_n)))
    plan.progress.append(Progress(s.rid, "decision", acc_n, final))


def _plan_probe(plan: StepPlan, rc: RequestControls, s: Part) -> None:
    pr = rc.probe
    if pr is None:
        return
    if not pr.done and s.split > s.a:
        final = s.p + (s.split - s.a) >= rc.num_prompt_tokens
        if pr.weight_row >= 0:
            job, acc_n = table_job(pr, s.a, s.split, final, restart=s.p == 0)
            if job is not None:
                if pr.wire.action == "mitigate":
                    job["force"] = (pr.source_slot, pr.target_slot,
                                    dict.fromkeys(pr.wire.mitigate_layers, pr.wire.scale))
                plan.table_jobs.append(TableJob(
                    s.rid, "probe" if final else "", job,
                    abstain=final and pr.wire.action == "abstain"))
            plan.progress.append(Progress(s.rid, "probe", acc_n, final))
        else:
            plan.host_jobs.append(HostJob(s.rid, pr.layer, "mlp_probe",
                                          (s.a, s.split, int(final))))
    if pr.token_row >= 0 and s.samples:
        plan.table_jobs.append(TableJob(s.rid, "token_score", dict(
            layer=pr.token_layer, start=s.b - 1, end=s.b, kind=KIND_SIGMOID,
            weight_row=pr.token_row, pool=POOL_LAST, bias=pr.probe.token_bias)))
