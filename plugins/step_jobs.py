"""Running one step's plan: its job-table rows (with the callbacks that put their results
into the step's report) and its host-side jobs by layer (refusal controllers, MLP
probes).

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
        self.abstain_jobs: dict[str, int] = {}  # rid -> job row scoring its abstain
        self.abstained: set[str] = set()  # rids whose sampler may only end (abstain.py)

    def schedule(self, plan: StepPlan, requests: dict[str, RequestControls | None],
                 report: StepReport) -> None:
        """Add the plan's table jobs and queue its host jobs."""
        for tj in plan.table_jobs:
            rc = requests[tj.rid]
            j = self.jobs.add(**tj.job, on_result=self._callback(tj, rc, report))
            if tj.abstain:
                self.abstain_jobs[rc.spec.rid] = j  # read on the device by abstain.py
        for hj in plan.host_jobs:
            self._due(hj.layer, partial(self._host_job, hj, requests[hj.rid], report))

    def run_due(self, layer: int, hidden: torch.Tensor, residual: torch.Tensor | None
                ) -> bool:
        """Run the host jobs due after `layer`; True if one wrote into a slot."""
        due = self.pending.pop(layer, None)
        return bool(due) and any([job(hidden, residual) for job in due])  # every job runs

    def end_step(self) -> None:
        self.pending.clear()

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


def stream_rows(hidden: torch.Tensor, residual: torch.Tensor | None,
                rows: torch.Tensor | int) -> torch.Tensor:
    """The residual stream (hidden + residual) at `rows`, fp32: [n, H] ([H] for one)."""
    x = hidden[rows].float()
    return x + residual[rows].float() if residual is not None else x
