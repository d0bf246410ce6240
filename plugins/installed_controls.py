"""The worker halves of the installed controls (plugins/api.py), run by the runtime:
setup per request, plan per step (their rows taken from the step planner's parts),
their per-layer hook, collection into the step report, release."""

from __future__ import annotations

import json
import logging

from vsteer.plugins.api import ControlSetupError, RequestRows, WorkerContext, WorkerControl
from vsteer.plugins.control_registry import installed_controls
from vsteer.plugins.request_controls import RequestControls
from vsteer.plugins.step_planner import StepPlan
from vsteer.plugins.step_report import StepReport

log = logging.getLogger("vsteer.runtime")


class InstalledControls:
    def __init__(self, ctx: WorkerContext) -> None:
        self.workers: dict[str, WorkerControl] = {
            name: c.worker(ctx) for name, c in installed_controls().items()}
        self.layer_hooks = list(self.workers.values())
        self._rows: dict[str, list[RequestRows]] = {}  # this step's, by control

    def setup(self, rc: RequestControls, wires: dict[str, str]) -> None:
        """Set up the request's installed controls; what fails goes to rc.errors."""
        for name, wire in wires.items():
            wc = self.workers.get(name)
            if wc is None:
                rc.errors.append(f"control {name!r} is not installed in this worker")
                continue
            try:
                rc.plugins[name] = wc.setup(json.loads(wire), rc.num_prompt_tokens)
            except ControlSetupError as e:
                rc.errors.append(f"{name} not applied: {e}")

    def release(self, rc: RequestControls) -> None:
        for name, state in rc.plugins.items():
            self.workers[name].release(state)
        rc.plugins.clear()

    def plan(self, step: StepPlan, requests: dict[str, RequestControls | None]) -> None:
        rows: dict[str, list[RequestRows]] = {name: [] for name in self.workers}
        for part in step.parts:
            rc = requests[part.rid]
            for name, state in rc.plugins.items():
                rows[name].append(RequestRows(state, rc.spec.rid, part.choice, part.a, part.b,
                                              part.p, part.split, part.samples))
        self._rows = rows
        for name, wc in self.workers.items():
            wc.plan(rows[name])

    def collect(self, report: StepReport) -> None:
        for name, rows in self._rows.items():
            wc = self.workers[name]
            for r in rows:
                result = wc.collect(r)
                if result is not None:
                    report.entry(r.rid, r.choice)[name] = result
        self._rows = {}
