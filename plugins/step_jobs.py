"""Running one step's plan: its job-table rows (with the callbacks that put their results
into the step's report), its host-side jobs by layer (refusal controllers, MLP probes,
early-exit checks) and the early-exit records.

Every result lands in the step's `StepReport` (plugins/step_report.py), which is sent
once after the step: the host jobs have run by the end of the forward, the table jobs'
callbacks run on the result reader (plugins/result_mailbox.py) before it sends.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial

import torch

from vsteer.plugins.decision import decide, write_force
from vsteer.plugins.early_exit import UNKNOWN, ExitGroup
from vsteer.plugins.job_table import JobTable
from vsteer.plugins.probe_control import mlp_prefill
from vsteer.plugins.request_controls import RequestControls
from vsteer.plugins.slot_table import SlotTable
from vsteer.plugins.step_planner import HostJob, StepPlan, TableJob
from vsteer.plugins.step_report import StepReport

# A host-side job due at one layer of this step: (hidden, residual) -> whether it wrote
# into a slot (then the step's token plan must be re-read).
Job = Callable[[torch.Tensor, "torch.Tensor | None"], bool]
NOT_SCORED = "not_scored"  # a job's layer did not run in its step (early exit)


class StepJobs:
    def __init__(self, slots: SlotTable, jobs: JobTable, num_layers: int,
                 device: torch.device) -> None:
        self.slots, self.jobs, self.num_layers, self.device = slots, jobs, num_layers, device
        self.pending: dict[int, list[Job]] = {}  # host jobs due in this step, by layer
        self.exit_groups: list[ExitGroup] = []
        self.skip_after: int | None = None  # this step exited after this layer
        self.abstain_jobs: dict[str, int] = {}  # rid -> job row scoring its abstain
        self.abstained: set[str] = set()  # rids whose sampler may only end (abstain.py)
        self.lens: Callable[[torch.Tensor], torch.Tensor] | None = None  # x -> token

    def schedule(self, plan: StepPlan, requests: dict[str, RequestControls | None],
                 report: StepReport, can_skip: bool) -> None:
        """Add the plan's table jobs and queue its host jobs and exit checks."""
        for tj in plan.table_jobs:
            rc = requests[tj.rid]
            j = self.jobs.add(**tj.job, on_result=self._callback(tj, rc, report))
            if tj.abstain:
                self.abstain_jobs[rc.spec.rid] = j  # read on the device by abstain.py
        for hj in plan.host_jobs:
            self._due(hj.layer, partial(self._host_job, hj, requests[hj.rid], report))
        if plan.exit_rows:
            self._plan_exit(plan, requests, can_skip)

    def run_due(self, layer: int, hidden: torch.Tensor, residual: torch.Tensor | None
                ) -> bool:
        """Run the host jobs due after `layer`; True if one wrote into a slot."""
        due = self.pending.pop(layer, None)
        return bool(due) and any([job(hidden, residual) for job in due])  # every job runs

    def end_step(self, report: StepReport) -> None:
        self.pending.clear()
        if self.exit_groups:
            self._report_exits(report)

    # -- results -------------------------------------------------------------------------
    def _callback(self, tj: TableJob, rc: RequestControls, report: StepReport):
        if tj.result == "guard":
            return partial(self._decided, rc, report)
        if tj.result == "probe":
            return partial(self._probed, rc, report)
        if tj.result == "token_score":
            return partial(self._token_scored, rc, report)
        return None

    def _decided(self, rc: RequestControls, report: StepReport, score: float, fired: bool
                 ) -> None:
        if self._not_scored(rc, report, score, "refusal guard"):
            return
        d = rc.decision
        d.score, d.fired = score, fired
        report.entry(rc.spec.rid, rc.choice)["decision"] = {
            "kind": d.wire.kind, "score": score, "fired": fired}

    def _probed(self, rc: RequestControls, report: StepReport, score: float, fired: bool
                ) -> None:
        if self._not_scored(rc, report, score, "hallucination probe"):
            return
        run = rc.probe
        run.score, run.fired = score, fired
        report.entry(rc.spec.rid, rc.choice)["probe"] = {
            "score": score, "fired": fired, "action": run.wire.action}
        if fired and run.wire.action == "abstain":
            self.abstained.add(rc.spec.rid)

    def _token_scored(self, rc: RequestControls, report: StepReport, score: float,
                      fired: bool) -> None:
        rid = rc.spec.rid
        if math.isnan(score):  # the token layer did not run: the step exited before it
            score = None
            if not rc.told_unscored:
                rc.told_unscored = True
                report.error(rid, rc.choice, NOT_SCORED, (
                    "per-token hallucination scores are null for tokens that exited "
                    f"before the probe's layer {rc.probe.token_layer} (early exit)"))
        report.append(rid, rc.choice, "token_scores", score)

    @staticmethod
    def _not_scored(rc: RequestControls, report: StepReport, score: float, what: str
                    ) -> bool:
        """A prefill job whose layer did not run (never expected: prefill steps do not
        exit early) becomes a coded error, not a NaN or a silent null."""
        if not math.isnan(score):
            return False
        report.error(rc.spec.rid, rc.choice, NOT_SCORED,
                     f"{what} was not scored: its layer did not run")
        return True

    # -- host jobs -----------------------------------------------------------------------
    def _due(self, layer: int, job: Job) -> None:
        self.pending.setdefault(layer, []).append(job)

    def _host_job(self, hj: HostJob, rc: RequestControls, report: StepReport,
                  hidden: torch.Tensor, residual: torch.Tensor | None) -> bool:
        if hj.kind == "controller":
            d = rc.decision
            coeff = decide(d, stream_rows(hidden, residual, hj.args[0]))
            if coeff:
                write_force(d.source_slot, d.target_slot, coeff, self.slots.vectors,
                            self.slots.inv_norms)
            self._decided(rc, report, d.score, d.fired)
            return bool(coeff)
        a, b, final = hj.args
        run = rc.probe
        if not mlp_prefill(run, hidden, residual, a, b, bool(final)):
            return False
        self._probed(rc, report, run.score, run.fired)
        if run.fired and run.wire.action == "mitigate":
            write_force(run.source_slot, run.target_slot,
                        dict.fromkeys(run.wire.mitigate_layers, run.wire.scale),
                        self.slots.vectors, self.slots.inv_norms)
            return True
        return False

    def _plan_exit(self, plan: StepPlan, requests: dict[str, RequestControls | None],
                   can_skip: bool) -> None:
        """Group the step's early-exit sampling rows by predictor and schedule their
        checks. The step may skip layers only if every row in it is a decode token of
        an exit-mode request sharing one predictor."""
        by_model: dict[int, list[tuple[RequestControls, int]]] = {}
        for rid, row in plan.exit_rows:
            rc = requests[rid]
            by_model.setdefault(id(rc.exit.model), []).append((rc, row))
        may_skip = can_skip and plan.whole_step_exits and len(by_model) == 1
        for members in by_model.values():
            g = ExitGroup.plan([rc.exit for rc, _ in members],
                               [rc.spec.rid for rc, _ in members],
                               [row for _, row in members], may_skip, self.device)
            g.choices = [rc.choice for rc, _ in members]
            self.exit_groups.append(g)
            for la in g.layers:
                self._due(la, partial(self._exit_check, g, la))
            if any(g.observe):
                self._due(self.num_layers - 1, partial(self._lens_check, g))

    def _exit_check(self, group: ExitGroup, layer: int, hidden: torch.Tensor,
                    residual: torch.Tensor | None) -> bool:
        if group.check(layer, stream_rows(hidden, residual, group.rows)):
            self.skip_after = layer
        return False

    def _lens_check(self, group: ExitGroup, hidden: torch.Tensor,
                    residual: torch.Tensor | None) -> bool:
        """Observe: does the token read at each row's exit layer equal the full model's?"""
        idx = [i for i, la in enumerate(group.exit_layer) if la >= 0]
        if not idx or self.lens is None:
            return False
        full = stream_rows(hidden, residual, group.rows[idx])
        toks = self.lens(torch.cat([torch.stack([group.stash[i] for i in idx]), full]))
        n = len(idx)
        for j, i in enumerate(idx):
            group.agree[i] = int(toks[j].item() == toks[n + j].item())
        return False

    def _report_exits(self, report: StepReport) -> None:
        last = self.num_layers - 1
        for g in self.exit_groups:
            for i, rid in enumerate(g.rids):
                la = g.exit_layer[i]
                report.append(rid, g.choices[i], "exit",
                              [la if la >= 0 else last, g.agree[i] if la >= 0 else UNKNOWN])
        self.exit_groups.clear()
        self.skip_after = None


def stream_rows(hidden: torch.Tensor, residual: torch.Tensor | None,
                rows: torch.Tensor | int) -> torch.Tensor:
    """The residual stream (hidden + residual) at `rows`, fp32: [n, H] ([H] for one)."""
    x = hidden[rows].float()
    return x + residual[rows].float() if residual is not None else x
