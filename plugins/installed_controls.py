"""The worker halves of the controls (plugins/api.py), run by the runtime: setup per
request, plan per step (their rows taken from the step planner's parts), their
per-layer hook, collection into the step report, release; and, for the sampler, the
flags of controls that may end a request (plugins/abstain.py)."""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Iterable, Mapping

import torch

from vsteer.plugins.api import ControlSetupError, RequestRows, WorkerContext, WorkerControl
from vsteer.plugins.control_registry import installed_controls
from vsteer.plugins.request_controls import RequestControls
from vsteer.plugins.shared_tables import SharedTables
from vsteer.plugins.step_planner import StepPlan
from vsteer.plugins.step_report import StepReport

log = logging.getLogger("vsteer.runtime")


class InstalledControls:
    def __init__(self, ctx: WorkerContext, tables: SharedTables | None = None) -> None:
        controls = installed_controls()
        self.tables = tables
        made = {name: c.worker(dataclasses.replace(
            ctx, tables=tables.view(name) if tables is not None else None))
            for name, c in controls.items()}
        # controls without a worker half (steer: its entries go to the shared token plan)
        self.workers: dict[str, WorkerControl] = {
            name: wc for name, wc in made.items() if wc is not None}
        # editors first (by name), then readers: a reader sees the layer's final stream;
        # controls that work only through the shared tables have no per-layer hook
        self._order = sorted(self.workers, key=lambda n: (controls[n].reads_only, n))
        self.layer_hooks = [self.workers[n] for n in self._order
                            if type(self.workers[n]).on_layer is not WorkerControl.on_layer]
        self._busy: list[WorkerControl] = []  # this step's controls with rows, in order
        self._rows: dict[str, list[RequestRows]] = {}  # this step's, by control
        # request (vsteer rid) -> (control, state) of the controls that may end it
        # (WorkerControl.ends, asked at every sampling step by plugins/abstain.py)
        self.enders: dict[str, list[tuple[WorkerControl, object]]] = {}
        self.eager = ctx.eager
        self.rows_this_step = torch.zeros(1, dtype=torch.int64)  # CPU: installed rows
        # CPU engines in compiled mode: one op boundary per layer for all of them
        # (kernels/installed_op.py); CUDA graphs replay each control's own op instead
        self._handle = 0
        if not ctx.eager and ctx.device.type == "cpu" and self.layer_hooks:
            from vsteer.kernels.installed_op import register_runner

            self._handle = register_runner(self._run_busy)

    def attach(self, model: torch.nn.Module) -> None:
        for wc in self.workers.values():
            wc.attach(model)

    def describe(self) -> dict[str, dict]:
        """Each control's WorkerControl.describe(), by name (the worker's hello)."""
        return {name: wc.describe() for name, wc in self.workers.items()}

    def setup(self, rc: RequestControls, wires: dict[str, str], pinned: set[str]) -> None:
        """Set up the request's controls, in the request's order (`pinned`: keys live
        requests hold); what fails goes to rc.errors."""
        for name, wire in wires.items():
            wc = self.workers.get(name)
            if wc is None:
                rc.errors.append(f"control {name!r} is not installed in this worker")
                continue
            try:
                if self.tables is not None:
                    with self.tables.setting_up(rc, pinned):
                        state = wc.setup(json.loads(wire), rc.num_prompt_tokens)
                else:
                    state = wc.setup(json.loads(wire), rc.num_prompt_tokens)
            except ControlSetupError as e:
                rc.errors.append(f"{name} not applied: {e}")
                continue
            rc.plugins[name] = state
            if wc.ends:
                self.enders.setdefault(rc.spec.rid, []).append((wc, state))

    def release(self, rc: RequestControls) -> None:
        for name, state in rc.plugins.items():
            self.workers[name].release(state)
        # the n choices of a reply share its rid: drop only this engine request's flags
        mine = {id(s) for s in rc.plugins.values()}
        rest = [e for e in self.enders.get(rc.spec.rid, ()) if id(e[1]) not in mine]
        if rest:
            self.enders[rc.spec.rid] = rest
        else:
            self.enders.pop(rc.spec.rid, None)
        rc.plugins.clear()

    def ending(self, rid: str) -> list[tuple[torch.Tensor, int]]:
        """The device flags that end request `rid` this sampling step, if set. The sampler
        knows a row's rid, not its choice: with n > 1 a row reads every choice's flags
        (abstain: the choices share one prompt, so one probe verdict)."""
        out = []
        for wc, state in self.enders.get(rid, ()):
            flag = wc.ends_request(state)
            if flag is not None:
                out.append(flag)
        return out

    def plan(self, step: StepPlan, requests: dict[str, RequestControls | None]) -> None:
        rows = rows_by_control(step, requests, self.workers)
        self._rows = rows
        for name, wc in self.workers.items():
            wc.plan(rows[name])
        hooked = set(map(id, self.layer_hooks))
        self._busy = [self.workers[n] for n in self._order
                      if rows[n] and id(self.workers[n]) in hooked]
        self.rows_this_step[0] = sum(len(rows[n]) for n in self._order
                                     if id(self.workers[n]) in hooked)

    def on_layer(self, layer: int, hidden: torch.Tensor, residual: torch.Tensor | None
                 ) -> None:
        """Every decoder layer, from the runtime's hook. Where this runs as Python every
        step (eager engines; CPU compiled engines, through one op), only the controls
        with rows this step run; a traced graph on CUDA calls every control's op."""
        if self._handle:
            torch.ops.vsteer.installed_layer(hidden, residual, self.rows_this_step, layer,
                                             self._handle)
        elif self.eager:
            self._run_busy(layer, hidden, residual)
        else:
            self.run_layer(layer, hidden, residual)

    def _run_busy(self, layer: int, hidden: torch.Tensor, residual: torch.Tensor | None
                  ) -> None:
        for wc in self._busy:
            wc.on_layer(layer, hidden, residual)

    def run_layer(self, layer: int, hidden: torch.Tensor, residual: torch.Tensor | None
                  ) -> None:
        """Every installed control's per-layer op (what a traced graph holds)."""
        for wc in self.layer_hooks:
            wc.on_layer(layer, hidden, residual)

    def collect(self, report: StepReport) -> None:
        for name, rows in self._rows.items():
            wc = self.workers[name]
            for r in rows:
                result = wc.collect(r)
                if result is not None:
                    report.entry(r.rid, r.choice)[name] = result
        self._rows = {}
        self._busy = []
        self.rows_this_step[0] = 0
        for wc in self.workers.values():
            wc.after_step()


def rows_by_control(step: StepPlan, requests: Mapping[str, RequestControls | None],
                    names: Iterable[str]) -> dict[str, list[RequestRows]]:
    """Each installed control's rows in this step (pure: what its `plan` gets)."""
    rows: dict[str, list[RequestRows]] = {name: [] for name in names}
    for part in step.parts:
        rc = requests[part.rid]
        assert rc is not None  # the planner only makes parts of controlled requests
        for name, state in rc.plugins.items():
            rows[name].append(RequestRows(state, rc.spec.rid, part.choice, part.a, part.b,
                                          part.p, part.split, part.samples))
    return rows
