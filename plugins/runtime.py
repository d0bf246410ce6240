"""The control runtime inside a vLLM worker.

Per step: the pure planner (plugins/step_planner.py) turns the batch and the live
requests' controls into each request's rows and its token-plan rows; every control
then plans its own part (plugins/installed_controls.py), writing the shared tables
(plugins/shared_tables.py: slots, job-table rows, host jobs) or tables of its own. Per
layer: the steering op, the job op (no read-back), the host jobs due there (eager, or
through the `decide` op), each control's own op, and capture for offline tooling.
After the step: one report message with everything the step produced
(plugins/step_report.py), sent once its device results are read
(plugins/result_mailbox.py). Nothing here names a control."""

from __future__ import annotations

import logging
import os
import threading
import time

import torch

import vsteer.kernels  # noqa: F401  (registers torch.ops.vsteer.*)
from vsteer.artifacts import ModelFingerprint
from vsteer.kernels.decide_op import register_decider
from vsteer.kernels.dispatch import OPS, backend, steer_backend
from vsteer.kernels.steer_cpu import kernel_seconds
from vsteer.plugins import vllm_compat as compat
from vsteer.plugins.api import WorkerContext
from vsteer.plugins.capture import CaptureCollector
from vsteer.plugins.channel import WorkerChannel
from vsteer.plugins.device_buffer import UploadFence
from vsteer.plugins.installed_controls import InstalledControls
from vsteer.plugins.job_table import JobTable
from vsteer.plugins.rank_agreement import agree
from vsteer.plugins.request_controls import RequestControls
from vsteer.plugins.request_setup import RequestSetup
from vsteer.plugins.result_book import NOT_APPLIED
from vsteer.plugins.result_mailbox import ResultMailbox
from vsteer.plugins.shared_tables import SharedTables
from vsteer.plugins.slot_table import SlotTable
from vsteer.plugins.step_planner import StepPlan, plan_step
from vsteer.plugins.step_report import StepReport
from vsteer.plugins.token_plan import TokenPlan
from vsteer.wire import EXTRA_ARGS_KEY, MAX_STEER_ENTRIES, decode

log = logging.getLogger("vsteer.runtime")
STATS_INTERVAL_S = 0.5


class ControlRuntime:
    def __init__(self, shape: compat.RunnerShape, channel: WorkerChannel) -> None:
        cfg = shape.vsteer_config or {}
        self.shape = shape
        self.channel = channel
        self.eager = shape.eager
        self.fingerprint = ModelFingerprint(shape.architecture, shape.hidden_size,
                                            shape.num_layers)
        # private slots: by default one per sequence the engine runs, so a decision on
        # every request (a refusal guard by policy) never waits for a slot
        private = cfg.get("max_private_slots")
        self.slots = SlotTable(int(cfg.get("max_steer_slots", 32)), shape.num_layers,
                               shape.hidden_size, shape.dtype, shape.device,
                               num_private=int(shape.max_num_reqs if private is None
                                               else private))
        # rows: one per steering segment (plugins/position_window.py) a request is
        # in; most hold one, windows add a few, and rows behind a request are freed
        self.plan = TokenPlan(shape.max_num_tokens, 4 * shape.max_num_reqs,
                              int(cfg.get("max_entries", MAX_STEER_ENTRIES)), shape.device)
        # per scheduled request at most 3 job rows (refusal: a guard; hallucination: a
        # probe chunk and a per-token score); accumulators: a mean-pooled probe and a
        # linear guard's window each hold one
        self.jobs = JobTable(3 * shape.max_num_reqs, shape.num_layers, shape.hidden_size,
                             2 * shape.max_num_reqs, 2 * shape.max_num_reqs, shape.device,
                             self.plan.step)
        self.tables = SharedTables(self.slots, self.jobs, shape.mode.graphs, shape.device)
        # The runtime's state is shared with the thread that reads job results
        # (plugins/result_mailbox.py): both hold this lock while they touch it.
        self.lock = threading.RLock()
        self.results = ResultMailbox(self.jobs.capacity, shape.device, self.lock)
        self.fence = UploadFence(shape.device)  # host staging vs. the last upload
        self.setup = RequestSetup(self.fingerprint, self.slots, shape.tp_rank)
        self.tp_group = compat.tp_cpu_group()
        self.capture: CaptureCollector | None = None
        if cfg.get("capture"):
            if not self.eager:
                raise RuntimeError("vsteer hidden-state capture needs enforce_eager=True")
            self.capture = CaptureCollector(channel, shape.hidden_size)
        self.requests: dict[str, RequestControls | None] = {}
        self.worker_ctx = WorkerContext(
            self.fingerprint, shape.hidden_size, shape.num_layers, shape.max_num_tokens,
            shape.max_num_reqs, shape.device, shape.dtype, shape.eager, shape.tp_rank)
        self.installed = InstalledControls(self.worker_ctx, self.tables)
        self.report = StepReport(0)  # what the current step produced, per request
        self._decide_handle = register_decider(self._run_due)
        self.steered_tokens = 0
        self.control_seconds = 0.0
        self.steps = 0
        self._last_stats = 0.0
        steer = steer_backend(shape.device)
        self.backend = steer.name
        self.backends = {op: backend(op, shape.device).name for op in OPS}
        self._steer_kernel = steer.fn  # eager mode calls it directly, skipping the dispatcher

    @property
    def layer_skip(self):
        return self.worker_ctx.layer_skip

    def attach_model(self, model, layer_class: str, kv_fill: bool) -> None:
        """In eager mode, a skip test on each decoder layer (plugins/api.py: LayerSkip,
        which early exit uses); then installed controls hook modules of their own."""
        if self.eager and kv_fill:
            self.layer_skip.available = compat.install_layer_skip(
                model, layer_class, self.skips) > 0
        self.installed.attach(model)

    def announce(self) -> None:
        """Tell the server this worker is ready, and what it can do."""
        self.channel.send({"type": "hello", "pid": os.getpid(), "rank": self.shape.tp_rank,
                           "fingerprint": self.fingerprint.to_dict(), "backend": self.backend,
                           "backends": self.backends, "slots": self.slots.num_slots,
                           "private_slots": self.slots.num_private,
                           "eager": self.eager,
                           "controls": self.installed.describe()})

    def skips(self, layer: int) -> bool:
        after = self.layer_skip.after
        return after is not None and layer > after

    # -- per layer (inside the forward pass; traced once in compiled mode) -------------
    def on_layer(self, layer: int, hidden: torch.Tensor, residual: torch.Tensor) -> None:
        plan = self.plan
        if self.eager:
            # Not traced: skip idle steps in Python and call the kernel without the
            # dispatcher (the op boundary only matters to the compiler).
            if plan.num_active:
                self._steer_kernel(
                    hidden, residual, plan.token_row.device, plan.row_slot.device,
                    plan.row_scale.device, plan.row_op.device, self.slots.vectors,
                    self.slots.inv_norms, plan.step, layer,
                )
        else:
            # Compiled graphs always call the op, which reads the CPU `step` flag itself.
            torch.ops.vsteer.steer_apply(
                hidden, residual, plan.token_row.device, plan.row_slot.device,
                plan.row_scale.device, plan.row_op.device, self.slots.vectors,
                self.slots.inv_norms, plan.step, layer,
            )
        jobs = self.jobs
        if not self.eager or layer in jobs.layers:
            torch.ops.vsteer.score_jobs(
                hidden, residual, jobs.jobs_i.device, jobs.jobs_f.device, jobs.coeff.device,
                jobs.layer_index.device, jobs.weights, jobs.acc, self.slots.vectors,
                self.slots.inv_norms, jobs.out, plan.step, layer,
            )
        if self.eager:
            if self.tables.pending and layer in self.tables.pending:
                self._run_due(layer, hidden, residual)
        else:
            torch.ops.vsteer.decide(self.slots.vectors, self.slots.inv_norms, plan.step,
                                    hidden, residual, layer, self._decide_handle)
        self.installed.on_layer(layer, hidden, residual)
        if self.capture is not None:
            self.capture.on_layer(layer, hidden, residual)

    def _run_due(self, layer: int, hidden: torch.Tensor, residual: torch.Tensor | None
                 ) -> None:
        if self.tables.run_due(layer, hidden, residual):
            self.plan.invalidate()

    # -- per step (host side, before and after the forward) ----------------------------
    def before_forward(self, runner, num_tokens: int) -> None:
        with self.lock:
            t0 = time.perf_counter()
            self.fence.wait()  # the device has read the last step's staging rows
            self.steps += 1
            view = compat.step_view(runner)
            self.report = StepReport(self.steps, len(view.req_ids))
            self.tables.begin_step(self.report)
            self._forget_finished(runner)
            new = [rid for rid in view.req_ids if rid not in self.requests]
            if new:
                self._set_up_new(runner, new)
            self.plan.begin(num_tokens)
            self.worker_ctx.step.tokens = int(view.query_start[len(view.req_ids)])
            step = plan_step(view, self.requests)
            self._apply(step, view.req_ids)
            self.installed.plan(step, self.requests)
            self.plan.commit(num_tokens)
            self.jobs.commit()
            self.fence.record()
            self.steered_tokens += self.plan.num_active
            self.control_seconds += time.perf_counter() - t0

    def _apply(self, step: StepPlan, scheduled: list[str]) -> None:
        """Make the planner's writes: rows, the request's progress, jobs, captures."""
        for part in step.parts:
            rc = self.requests[part.rid]
            self.report.entry(rc.spec.rid, part.choice)["sampled"] = int(part.samples)
            for seg in self.requests[part.rid].segments:
                if seg.hi is not None and seg.hi <= part.p and seg.row >= 0:
                    # behind this request (unused this step; a recompute re-allocates)
                    self.plan.free_row(seg.row)
                    seg.row = -1
        for w in step.rows:
            seg = self.requests[w.rid].segments[w.segment]
            if seg.row < 0:
                seg.row = self._alloc_row(seg.entries, scheduled)
            self.plan.assign(w.start, w.end, seg.row)
        if self.capture is not None:
            for rid, a, split, p in step.capture:
                rc = self.requests[rid]
                self.capture.plan(rc.spec.rid, rc.spec.capture.layers, rc.num_prompt_tokens,
                                  a, split, p)

    def after_forward(self, runner, num_tokens: int) -> None:
        with self.lock:
            if self.capture is not None:
                self.capture.finish_step()
            self.plan.reset()
            self.tables.end_step()  # host-job results are known now
            report = self.report
            self.installed.collect(report)
            self.layer_skip.after = None
            # Every TP rank computes the same results; rank 0 reports them, once the
            # step's table-job results have been read (in step order).
            send = self._send_report if self.shape.tp_rank == 0 else None
            self.jobs.finish(self.results, None if send is None else lambda: send(report))
            now = time.monotonic()
            if now - self._last_stats >= STATS_INTERVAL_S:
                self._last_stats = now
                self.send_stats()

    def _send_report(self, report: StepReport) -> None:
        msg = report.message()
        if msg is not None:
            self.channel.send(msg)

    def send_stats(self) -> None:
        pinned = self._pinned()
        self.channel.send({
            "type": "stats", "rank": self.shape.tp_rank, "steps": self.steps,
            "steered_tokens": self.steered_tokens,
            # host time: step planning + the CPU kernel (GPU kernels run asynchronously)
            "control_seconds": self.control_seconds + kernel_seconds(),
            "slots_in_use": self.slots.in_use(pinned), "slots_total": self.slots.num_slots,
            "private_slots_in_use": self.slots.private_in_use(pinned),
            "private_slots_total": self.slots.num_private,
            "backend": self.backend, "backends": self.backends,
            "dropped": self.channel.dropped,
        })

    # -- request bookkeeping -----------------------------------------------------------
    def _alloc_row(self, entries, scheduled: list[str]) -> int:
        if self.plan.free_rows == 0:
            # Preempted requests keep their state in the runner; take back their rows
            # (they get new ones when they are scheduled again).
            busy = set(scheduled)
            for rid, rc in self.requests.items():
                if rc is not None and rid not in busy:
                    self._free_rows_of(rc)
        return self.plan.alloc_row(entries)

    def _free_rows_of(self, rc: RequestControls) -> None:
        for seg in rc.segments:
            self.plan.free_row(seg.row)
            seg.row = -1

    def _forget_finished(self, runner) -> None:
        if not self.requests:
            return
        live = compat.live_request_ids(runner)
        for rid in [r for r in self.requests if r not in live]:
            rc = self.requests.pop(rid)
            if rc is not None:
                self._free_rows_of(rc)
                self.installed.release(rc)
                if self.capture is not None:
                    self.capture.forget(rc.spec.rid)

    def _pinned(self) -> set[str]:
        return {k for rc in self.requests.values() if rc is not None for k in rc.keys}

    def _set_up_new(self, runner, rids: list[str]) -> None:
        """Set up the controls of requests scheduled for the first time; ranks agree on
        what failed before any of them runs (plugins/rank_agreement.py)."""
        pinned = self._pinned()
        made: list[RequestControls | None] = []
        for rid in rids:
            extra, num_prompt = compat.request_extra_args(runner, rid)
            raw = extra.get(EXTRA_ARGS_KEY) if extra else None
            rc = None
            if raw is not None:
                spec = decode(raw)
                rc = self.setup.setup(spec, num_prompt, pinned)
                rc.choice = compat.choice_index(rid, spec.n)
                self.installed.setup(rc, spec.plugins, pinned)
            made.append(rc)
        verdicts = agree([rc.errors if rc is not None else [] for rc in made], self.tp_group)
        for rid, rc, why in zip(rids, made, verdicts, strict=True):
            if why is not None and rc is not None:
                msg = "no control of this request was applied: " + "; ".join(why)
                log.error("vsteer %s: %s", rc.spec.rid, msg)
                self.report.error(rc.spec.rid, rc.choice, NOT_APPLIED, msg)
                self.installed.release(rc)
                rc = None
            self.requests[rid] = rc
