"""The control runtime inside a vLLM worker: per step, map tokens to control rows and
fill the device job table; per layer, run the steering op and the job op (refusal
guards, linear hallucination probes, per-token scores: no read-back), then any
host-side jobs due at that layer (refusal controllers, MLP probes, early-exit checks:
eager-only on CUDA), and capture for offline tooling."""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections.abc import Callable
from functools import partial

import torch

import vsteer.kernels  # noqa: F401  (registers torch.ops.vsteer.*)
from vsteer.artifacts import (
    ModelFingerprint,
)
from vsteer.kernels.decide_op import register_decider
from vsteer.kernels.dispatch import OPS, backend, steer_backend
from vsteer.kernels.jobs_reference import KIND_COS, KIND_SIGMOID, POOL_LAST, POOL_MEAN
from vsteer.kernels.steer_cpu import kernel_seconds
from vsteer.plugins import vllm_compat as compat
from vsteer.plugins.capture import CaptureCollector
from vsteer.plugins.channel import WorkerChannel
from vsteer.plugins.decision import decide, window_part, write_force
from vsteer.plugins.device_buffer import UploadFence
from vsteer.plugins.early_exit import UNKNOWN, ExitGroup
from vsteer.plugins.job_table import JobTable
from vsteer.plugins.probe_control import mlp_prefill, table_job
from vsteer.plugins.rank_agreement import agree
from vsteer.plugins.request_controls import RequestControls
from vsteer.plugins.request_setup import RequestSetup
from vsteer.plugins.result_mailbox import ResultMailbox
from vsteer.plugins.slot_table import SlotTable
from vsteer.plugins.token_plan import TokenPlan
from vsteer.wire import (
    EXTRA_ARGS_KEY,
    MAX_STEER_ENTRIES,
    decode,
)

log = logging.getLogger("vsteer.runtime")
STATS_INTERVAL_S = 0.5
# A host-side job due at one layer of this step: (hidden, residual) -> whether it wrote
# into a slot (then the step's token plan must be re-read).
Job = Callable[[torch.Tensor, "torch.Tensor | None"], bool]


class ControlRuntime:
    def __init__(self, shape: compat.RunnerShape, channel: WorkerChannel) -> None:
        cfg = shape.vsteer_config or {}
        self.shape = shape
        self.channel = channel
        self.eager = shape.eager
        self.fingerprint = ModelFingerprint(shape.architecture, shape.hidden_size,
                                            shape.num_layers)
        self.slots = SlotTable(int(cfg.get("max_steer_slots", 32)), shape.num_layers,
                               shape.hidden_size, shape.dtype, shape.device)
        self.plan = TokenPlan(shape.max_num_tokens, 2 * shape.max_num_reqs,
                              int(cfg.get("max_entries", MAX_STEER_ENTRIES)), shape.device)
        # per scheduled request at most a guard, a probe chunk and a per-token score;
        # accumulators: a mean-pooled probe and a linear guard's window each hold one
        self.jobs = JobTable(3 * shape.max_num_reqs, shape.num_layers, shape.hidden_size,
                             2 * shape.max_num_reqs, 2 * shape.max_num_reqs, shape.device,
                             self.plan.step)
        # The runtime's state is shared with the thread that reads job results
        # (plugins/result_mailbox.py): both hold this lock while they touch it.
        self.lock = threading.RLock()
        self.results = ResultMailbox(self.jobs.capacity, shape.device, self.lock,
                                     self._flush_reports)
        self.fence = UploadFence(shape.device)  # host staging vs. the last upload
        self.abstain_jobs: dict[str, int] = {}  # rid -> job row scoring its abstain, this step
        self.setup = RequestSetup(shape, self.fingerprint, self.slots, self.jobs)
        self.tp_group = compat.tp_cpu_group()
        self.capture: CaptureCollector | None = None
        if cfg.get("capture"):
            if not self.eager:
                raise RuntimeError("vsteer hidden-state capture needs enforce_eager=True")
            self.capture = CaptureCollector(channel, shape.hidden_size)
        self.requests: dict[str, RequestControls | None] = {}
        self.pending: dict[int, list[Job]] = {}  # jobs due in this step, by layer
        self.decided: list[RequestControls] = []
        self.probed: list[RequestControls] = []  # probes scored in this step
        self.token_scores: dict[str, list[float]] = {}  # this step's per-token scores
        self.abstained: set[str] = set()  # rids whose sampler may only end (abstain.py)
        self.unscored: set[str] = set()  # rids told that some token scores are missing
        self.exit_groups: list[ExitGroup] = []  # this step's early-exit rows
        self.skip_after: int | None = None  # this step exited after this layer
        self.lens: Callable[[torch.Tensor], torch.Tensor] | None = None  # x -> token
        self.can_skip = False  # layer skipping installed (eager, attach_model)
        self._decide_handle = register_decider(self._decide)
        self.steered_tokens = 0
        self.control_seconds = 0.0
        self.steps = 0
        self._last_stats = 0.0
        steer = steer_backend(shape.device)
        self.backend = steer.name
        self.backends = {op: backend(op, shape.device).name for op in OPS}
        self._steer_kernel = steer.fn  # eager mode calls it directly, skipping the dispatcher

    def attach_model(self, model, layer_class: str, kv_fill: bool) -> None:
        """Early exit needs the model's head (observe) and, in eager mode, a skip test
        on each decoder layer (exit)."""
        self.lens = compat.lens_argmax(model)
        if self.eager and kv_fill:
            self.can_skip = compat.install_layer_skip(model, layer_class, self.skips) > 0
            self.setup.can_skip = self.can_skip

    def announce(self) -> None:
        """Tell the server this worker is ready, and what it can do."""
        self.channel.send({"type": "hello", "pid": os.getpid(), "rank": self.shape.tp_rank,
                           "fingerprint": self.fingerprint.to_dict(), "backend": self.backend,
                           "backends": self.backends, "slots": self.slots.num_slots,
                           "eager": self.eager, "layer_skip": self.can_skip})

    def skips(self, layer: int) -> bool:
        return self.skip_after is not None and layer > self.skip_after

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
            if self.pending and layer in self.pending:
                self._decide(layer, hidden, residual)
        else:
            torch.ops.vsteer.decide(self.slots.vectors, self.slots.inv_norms, plan.step,
                                    hidden, residual, layer, self._decide_handle)
        if self.capture is not None:
            self.capture.on_layer(layer, hidden, residual)

    def _decide(self, layer: int, hidden: torch.Tensor, residual: torch.Tensor | None) -> None:
        due = self.pending.pop(layer, None)
        if due and any([job(hidden, residual) for job in due]):  # every job runs
            self.plan.invalidate()

    def _refusal_job(self, rc: RequestControls, t: int, hidden: torch.Tensor,
                     residual: torch.Tensor | None) -> bool:
        x = _stream_rows(hidden, residual, t)  # [H]
        d = rc.decision
        coeff = decide(d, x)
        if coeff:
            write_force(d.source_slot, d.target_slot, coeff, self.slots.vectors,
                        self.slots.inv_norms)
        self.decided.append(rc)
        return bool(coeff)

    def _mlp_probe_job(self, rc: RequestControls, a: int, b: int, final: bool,
                       hidden: torch.Tensor, residual: torch.Tensor | None) -> bool:
        run = rc.probe
        if not mlp_prefill(run, hidden, residual, a, b, final):
            return False
        self._probed(rc, run.score, run.fired)
        if run.fired and run.wire.action == "mitigate":
            write_force(run.source_slot, run.target_slot, self._mitigation(run)[2],
                        self.slots.vectors, self.slots.inv_norms)
            return True
        return False

    # -- device-table jobs (scheduled before the forward, results after it) ------------
    def _guard_job(self, rc: RequestControls, a: int, p: int, split: int) -> None:
        """The guard's job for this step's prompt rows a..split (positions p..): a
        cosine on the last prompt token, or a linear score on the mean of the last
        `window` prompt tokens, accumulated across prefill chunks."""
        d = rc.decision
        part = window_part(p, split - a, rc.num_prompt_tokens, d.window)
        if part is None:
            return  # this chunk holds none of the window
        lo, hi, starts, final = part
        force = (d.source_slot, d.target_slot, dict.fromkeys(d.wire.force_layers, d.wire.scale))
        if starts:
            d.acc_n = 0  # the window starts here (again, after a preemption's recompute)
        first = d.acc_n == 0
        d.acc_n += hi - lo
        self.jobs.add(d.wire.layer, a + lo - p, a + hi - p,
                      KIND_SIGMOID if d.linear else KIND_COS, d.weight_row,
                      pool=POOL_MEAN if d.linear else POOL_LAST, bias=d.bias,
                      threshold=d.wire.threshold, force=force, acc_row=d.acc_row,
                      first=first, final=final, count=d.acc_n,
                      on_result=partial(self._guard_decided, rc) if final else None)
        d.done = final

    def _guard_decided(self, rc: RequestControls, score: float, fired: bool) -> None:
        if self._not_scored(rc, score, "refusal guard"):
            return
        rc.decision.score, rc.decision.fired = score, fired
        self.decided.append(rc)

    def _not_scored(self, rc: RequestControls, score: float, what: str) -> bool:
        """A prefill job whose layer did not run (never expected: prefill steps do not
        exit early) becomes a coded error, not a NaN or a silent null."""
        if not math.isnan(score):
            return False
        self._report_error(rc.spec.rid, f"{what} was not scored: its layer did not run")
        return True

    def _report_error(self, rid: str, message: str) -> None:
        """An entry for the request's `control.errors` (every rank knows it; rank 0 says)."""
        if self.shape.tp_rank == 0:
            self.channel.send({"type": "error", "rid": rid, "message": message})

    def _probe_table_job(self, rc: RequestControls, a: int, b: int, final: bool) -> None:
        run = rc.probe
        job = table_job(run, a, b, final)
        if job is not None:
            force = self._mitigation(run) if run.wire.action == "mitigate" else None
            j = self.jobs.add(**job, force=force, on_result=partial(self._probed, rc))
            if final and run.wire.action == "abstain":
                self.abstain_jobs[rc.spec.rid] = j  # read on the device by abstain.py

    def _probed(self, rc: RequestControls, score: float, fired: bool) -> None:
        if self._not_scored(rc, score, "hallucination probe"):
            return
        run = rc.probe
        run.score, run.fired = score, fired
        self.probed.append(rc)
        if fired and run.wire.action == "abstain":
            self.abstained.add(rc.spec.rid)

    @staticmethod
    def _mitigation(run) -> tuple[int, int, dict[int, float]]:
        return (run.source_slot, run.target_slot,
                dict.fromkeys(run.wire.mitigate_layers, run.wire.scale))

    def _token_scored(self, rc: RequestControls, score: float, fired: bool) -> None:
        if math.isnan(score):  # the token layer did not run: the step exited before it
            score = None
            if rc.spec.rid not in self.unscored:
                self.unscored.add(rc.spec.rid)
                self._report_error(rc.spec.rid, (
                    "per-token hallucination scores are null for tokens that exited "
                    f"before the probe's layer {rc.probe.token_layer} (early exit)"))
        self.token_scores.setdefault(rc.spec.rid, []).append(score)

    def _exit_job(self, group: ExitGroup, layer: int, hidden: torch.Tensor,
                  residual: torch.Tensor | None) -> bool:
        if group.check(layer, _stream_rows(hidden, residual, group.rows)):
            self.skip_after = layer
        return False

    def _lens_job(self, group: ExitGroup, hidden: torch.Tensor,
                  residual: torch.Tensor | None) -> bool:
        """Observe: does the token read at each row's exit layer equal the full model's?"""
        idx = [i for i, la in enumerate(group.exit_layer) if la >= 0]
        if not idx or self.lens is None:
            return False
        full = _stream_rows(hidden, residual, group.rows[idx])
        toks = self.lens(torch.cat([torch.stack([group.stash[i] for i in idx]), full]))
        n = len(idx)
        for j, i in enumerate(idx):
            group.agree[i] = int(toks[j].item() == toks[n + j].item())
        return False

    def _plan_exit(self, rows: list[tuple[RequestControls, int]], whole_step: bool) -> None:
        """Group this step's early-exit sampling rows by predictor and schedule their
        checks. The step may skip layers only if every row in it is a decode token of
        an exit-mode request (`whole_step`) sharing one predictor."""
        by_model: dict[int, list[tuple[RequestControls, int]]] = {}
        for rc, row in rows:
            by_model.setdefault(id(rc.exit.model), []).append((rc, row))
        may_skip = self.can_skip and whole_step and len(by_model) == 1
        for members in by_model.values():
            runs = [rc.exit for rc, _ in members]
            g = ExitGroup.plan(runs, [rc.spec.rid for rc, _ in members],
                               [row for _, row in members], may_skip, self.shape.device)
            self.exit_groups.append(g)
            for la in g.layers:
                self._due(la, partial(self._exit_job, g, la))
            if any(g.observe):
                self._due(self.shape.num_layers - 1, partial(self._lens_job, g))

    def _send_exit_records(self) -> None:
        last = self.shape.num_layers - 1
        records: dict[str, list[list[int]]] = {}
        for g in self.exit_groups:
            for i, rid in enumerate(g.rids):
                la = g.exit_layer[i]
                records.setdefault(rid, []).append(
                    [la if la >= 0 else last, g.agree[i] if la >= 0 else UNKNOWN])
        self.exit_groups.clear()
        self.skip_after = None
        if records and self.shape.tp_rank == 0:
            self.channel.send({"type": "exit_tokens", "tokens": records})

    def _due(self, layer: int, job: Job) -> None:
        self.pending.setdefault(layer, []).append(job)

    # -- per step (host side, before and after the forward) ----------------------------
    def before_forward(self, runner, num_tokens: int) -> None:
        with self.lock:
            self._before_forward(runner, num_tokens)

    def _before_forward(self, runner, num_tokens: int) -> None:
        t0 = time.perf_counter()
        self.fence.wait()  # the device has read the last step's staging rows
        self.abstain_jobs.clear()  # last step's sampling is over
        view = compat.step_view(runner)
        self._forget_finished(runner)
        new = [rid for rid in view.req_ids if rid not in self.requests]
        if new:
            self._set_up_new(runner, new)
        plan = self.plan
        plan.begin(num_tokens)
        qs, pos0 = view.query_start, view.start_pos
        exit_rows: list[tuple[RequestControls, int]] = []
        whole_step = True  # every row is a decode token of an exit-mode request
        for i, rid in enumerate(view.req_ids):
            rc = self.requests[rid]
            if rc is None:
                whole_step = False
                continue
            a, b, p = int(qs[i]), int(qs[i + 1]), int(pos0[i])
            er = rc.exit
            if er is not None and p + (b - a) >= rc.num_prompt_tokens:
                exit_rows.append((rc, b - 1))  # the row that samples its next token
            if er is None or er.wire.mode != "exit" or b - a != 1 \
                    or p < rc.num_prompt_tokens:
                whole_step = False
            split = a + min(max(rc.num_prompt_tokens - p, 0), b - a)
            if split > a and rc.prompt_entries:
                if rc.prompt_row < 0:
                    rc.prompt_row = self._alloc_row(rc.prompt_entries, view.req_ids)
                plan.assign(a, split, rc.prompt_row)
            if b > split and rc.generated_entries:
                if rc.generated_row < 0:
                    rc.generated_row = self._alloc_row(rc.generated_entries, view.req_ids)
                plan.assign(split, b, rc.generated_row)
            d = rc.decision
            if d is not None and not d.done:
                last = rc.num_prompt_tokens - 1  # decide on the last prompt token
                if d.weight_row >= 0:
                    self._guard_job(rc, a, p, split)
                elif p <= last < p + (b - a):
                    self._due(d.wire.layer, partial(self._refusal_job, rc, a + last - p))
            pr = rc.probe
            if pr is not None:
                if not pr.done and split > a:
                    final = p + (split - a) >= rc.num_prompt_tokens
                    if pr.weight_row >= 0:
                        self._probe_table_job(rc, a, split, final)
                    else:
                        self._due(pr.layer, partial(self._mlp_probe_job, rc, a, split, final))
                if pr.token_row >= 0 and p + (b - a) >= rc.num_prompt_tokens:
                    # the step's last row samples this request's next token
                    self.jobs.add(pr.token_layer, b - 1, b, KIND_SIGMOID, pr.token_row,
                                  bias=pr.probe.token_bias,
                                  on_result=partial(self._token_scored, rc))
            if self.capture is not None and rc.spec.capture is not None:
                self.capture.plan(rc.spec.rid, rc.spec.capture.layers, rc.num_prompt_tokens,
                                  a, split, p)
        if exit_rows:
            self._plan_exit(exit_rows, whole_step)
        plan.commit(num_tokens)
        self.jobs.commit()
        self.fence.record()
        self.steered_tokens += plan.num_active
        self.steps += 1
        self.control_seconds += time.perf_counter() - t0

    def after_forward(self, runner, num_tokens: int) -> None:
        with self.lock:
            if self.capture is not None:
                self.capture.finish_step()
            self.plan.reset()
            self.pending.clear()
            self.jobs.finish(self.results)  # table-job reports follow from its reader
            self._flush_reports()  # host-job results are known now
            if self.exit_groups:
                self._send_exit_records()
            now = time.monotonic()
            if now - self._last_stats >= STATS_INTERVAL_S:
                self._last_stats = now
                self.send_stats()

    def _flush_reports(self) -> None:
        """Send the decisions, probe scores and per-token scores known so far (the
        runtime's lock is held). Every TP rank computes them alike; rank 0 reports."""
        report = self.shape.tp_rank == 0
        for rc in self.decided if report else ():
            d = rc.decision
            self.channel.send({"type": "decision", "rid": rc.spec.rid, "kind": d.wire.kind,
                               "score": d.score, "fired": d.fired})
        self.decided.clear()
        for rc in self.probed if report else ():
            run = rc.probe
            self.channel.send({"type": "probe", "rid": rc.spec.rid, "score": run.score,
                               "fired": run.fired, "action": run.wire.action})
        self.probed.clear()
        if self.token_scores and report:  # lists append: one rank only
            self.channel.send({"type": "token_scores", "scores": self.token_scores})
        self.token_scores = {}

    def send_stats(self) -> None:
        pinned = self._pinned()
        self.channel.send({
            "type": "stats", "rank": self.shape.tp_rank, "steps": self.steps,
            "steered_tokens": self.steered_tokens,
            # host time: step planning + the CPU kernel (GPU kernels run asynchronously)
            "control_seconds": self.control_seconds + kernel_seconds(),
            "slots_in_use": self.slots.in_use(pinned), "slots_total": self.slots.num_slots,
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
        self.plan.free_row(rc.prompt_row)
        self.plan.free_row(rc.generated_row)
        rc.prompt_row = rc.generated_row = -1

    def _forget_finished(self, runner) -> None:
        if not self.requests:
            return
        live = compat.live_request_ids(runner)
        for rid in [r for r in self.requests if r not in live]:
            rc = self.requests.pop(rid)
            if rc is not None:
                self._free_rows_of(rc)
                self.abstained.discard(rc.spec.rid)
                self.unscored.discard(rc.spec.rid)
                self.setup.release(rc)
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
            rc = self.setup.setup(decode(raw), num_prompt, pinned) if raw is not None else None
            if rc is not None:
                pinned.update(rc.keys)
            made.append(rc)
        verdicts = agree([rc.errors if rc is not None else [] for rc in made], self.tp_group)
        for rid, rc, why in zip(rids, made, verdicts, strict=True):
            if why is not None and rc is not None:
                msg = "no control of this request was applied: " + "; ".join(why)
                log.error("vsteer %s: %s", rc.spec.rid, msg)
                self._report_error(rc.spec.rid, msg)
                self.setup.release(rc)
                rc = None
            self.requests[rid] = rc


def _stream_rows(hidden: torch.Tensor, residual: torch.Tensor | None,
                 rows: torch.Tensor | int) -> torch.Tensor:
    """The residual stream (hidden + residual) at `rows`, fp32: [n, H] ([H] for one)."""
    x = hidden[rows].float()
    return x + residual[rows].float() if residual is not None else x
