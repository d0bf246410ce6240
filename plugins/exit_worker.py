"""The worker half of `early_exit` (plugins/exit_control.py): its predictor loaded per
request, this step's sampling rows grouped by predictor, the checks run inside the
forward at the candidate layers (plugins/early_exit.py: ExitGroup), and one
[exit layer, agreement] record per sampled token.

The checks read the stream back to the host between two layers (eager engines, or
compiled CPU engines through the one op the installed controls share,
kernels/installed_op.py): a compiled CUDA engine runs nothing host-side per step
inside its graphs, so setup refuses there. A step exits (stops
after a layer, plugins/api.py: LayerSkip) only when every row in it is a decode token
of an exit-mode request sharing one predictor, and all of them are confident.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec
import torch

from vsteer.artifacts import ArtifactError
from vsteer.plugins import vllm_compat as compat
from vsteer.plugins.api import ControlSetupError, RequestRows, WorkerContext, WorkerControl
from vsteer.plugins.early_exit import UNKNOWN, ExitGroup, ExitRun
from vsteer.plugins.shared_tables import stream_rows
from vsteer.wire import WireExit


def exit_groups(rows: list[RequestRows], step_tokens: int, can_skip: bool
                ) -> list[tuple[list[RequestRows], bool]]:
    """This step's sampling rows, grouped by predictor, each with whether the step may
    stop early (pure: tests/test_exit_worker.py). May stop: layer skipping is installed,
    the rows are all the step has (each a one-token decode row of an exit-mode request)
    and one predictor serves them all."""
    sampling = [r for r in rows if r.samples]
    by_model: dict[int, list[RequestRows]] = {}
    for r in sampling:
        by_model.setdefault(id(r.state.model), []).append(r)
    decode_exits = sum(1 for r in sampling if r.state.wire.mode == "exit"
                       and r.end - r.start == 1 and r.prompt_end == r.start)
    whole = bool(sampling) and decode_exits == len(rows) == step_tokens
    may_skip = can_skip and whole and len(by_model) == 1
    return [(members, may_skip) for members in by_model.values()]


class ExitWorker(WorkerControl):
    def __init__(self, ctx: WorkerContext) -> None:
        self.ctx = ctx
        self.lens: Callable[[torch.Tensor], torch.Tensor] | None = None  # x -> token
        self.groups: list[ExitGroup] = []  # this step's
        self.due: dict[int, list[tuple[str, ExitGroup]]] = {}  # layer -> checks
        self.records: dict[tuple[str, int], list[int]] = {}  # (rid, choice) -> record

    def attach(self, model: torch.nn.Module) -> None:
        self.lens = compat.lens_argmax(model)

    def describe(self) -> dict[str, Any]:
        return {"layer_skip": self.ctx.layer_skip.available}

    def setup(self, wire: dict[str, Any], prompt_tokens: int) -> ExitRun:
        if not (self.ctx.eager or self.ctx.device.type == "cpu"):
            raise ControlSetupError("early exit runs on the host between two layers, which "
                                    "compiled CUDA graphs do not: serve with --enforce-eager "
                                    "to use it")
        w = msgspec.convert(wire, WireExit)
        try:
            run = ExitRun.load(w, self.ctx.device)
        except (ArtifactError, OSError, ValueError) as e:
            raise ControlSetupError(str(e)) from None
        if (why := run.model.predictor.fingerprint.mismatch(self.ctx.fingerprint)):
            raise ControlSetupError(why)
        if w.mode == "exit" and not self.ctx.layer_skip.available:
            raise ControlSetupError("layer skipping needs an eager engine (--enforce-eager) "
                                    "and a model whose K/V vsteer can fill")
        return run

    def plan(self, rows: list[RequestRows]) -> None:
        self.groups, self.due, self.records = [], {}, {}
        last = self.ctx.num_layers - 1
        for members, may_skip in exit_groups(rows, self.ctx.step.tokens,
                                             self.ctx.layer_skip.available):
            g = ExitGroup.plan([r.state for r in members], [r.rid for r in members],
                               [r.end - 1 for r in members], may_skip, self.ctx.device)
            g.choices = [r.choice for r in members]
            self.groups.append(g)
            for la in g.layers:
                self.due.setdefault(la, []).append(("check", g))
            if any(g.observe):
                self.due.setdefault(last, []).append(("lens", g))

    def on_layer(self, layer: int, hidden: torch.Tensor, residual: torch.Tensor | None
                 ) -> None:
        for kind, g in self.due.get(layer, ()):
            if kind == "check":
                if g.check(layer, stream_rows(hidden, residual, g.rows)):
                    self.ctx.layer_skip.stop_after(layer)
            else:
                self._lens_check(g, hidden, residual)

    def _lens_check(self, g: ExitGroup, hidden: torch.Tensor, residual: torch.Tensor | None
                    ) -> None:
        """Observe: does the token read at each row's exit layer equal the full model's?"""
        idx = [i for i, la in enumerate(g.exit_layer) if la >= 0]
        if not idx or self.lens is None:
            return
        full = stream_rows(hidden, residual, g.rows[idx])
        toks = self.lens(torch.cat([torch.stack([g.stash[i] for i in idx]), full]))
        n = len(idx)
        for j, i in enumerate(idx):
            g.agree[i] = int(toks[j].item() == toks[n + j].item())

    def collect(self, rows: RequestRows) -> list[int] | None:
        if not self.records:
            last = self.ctx.num_layers - 1
            for g in self.groups:
                for i, rid in enumerate(g.rids):
                    la = g.exit_layer[i]
                    self.records[(rid, g.choices[i])] = (
                        [la, g.agree[i]] if la >= 0 else [last, UNKNOWN])
        return self.records.get((rows.rid, rows.choice))

    def after_step(self) -> None:
        self.groups, self.due, self.records = [], {}, {}
