"""The worker half of `experts` (plugins/experts_control.py): at attach, every MoE
router of the model is wrapped (plugins/vllm_moe.py) so that its pick goes through
`expert_mask` before and `expert_force` after (kernels/expert_route_op.py). One route
slot per request holds its route[s, layer, expert] table (written at setup) and the
device counts of where its tokens went; per step the host writes token_slot[t] (the
route slot of token t, or -1), and after the step reads the counts of the requests
that ran (one read) and clears them.

A recompute after preemption runs positions the request ran before: those rows are
routed the same way, through the slot's shadow (slot + S, the same route table) whose
counts are dropped, so `control.experts` counts every position once."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

import vsteer.kernels  # noqa: F401  (registers the ops)
from vsteer.plugins.api import ControlSetupError, RequestRows, WorkerContext, WorkerControl
from vsteer.plugins.device_buffer import HostDeviceBuffer, UploadFence
from vsteer.plugins.vllm_moe import MoELayer, moe_layers, wrap_routing


@dataclass
class ExpertsState:
    slot: int
    rules: list[list[tuple[int, int]]]  # per rule: its (layer, expert) pairs
    routing: bool
    tokens: int = 0  # token rows this step at positions not run before
    next_pos: int = 0  # positions below this ran in an earlier step


class ExpertsWorker(WorkerControl):
    def __init__(self, ctx: WorkerContext) -> None:
        self.ctx = ctx
        S, T, dev = ctx.max_num_reqs, ctx.max_num_tokens, ctx.device
        self.layers: list[MoELayer] = []
        self.controlled: list[MoELayer] = []
        self.route = torch.zeros(0, 0, 0)  # [S, L, E] float32, sized at attach
        self.counts = torch.zeros(0, 0, 0, dtype=torch.int32)  # [S, L, E]
        self.token_slot = HostDeviceBuffer(torch.full((T,), -1, dtype=torch.int32), dev)
        self.active = torch.zeros(1, dtype=torch.int64)  # CPU: controlled rows this step
        self.fence = UploadFence(dev)
        self.free = list(range(S - 1, -1, -1))
        self._last_t = 0
        self._ran: list[int] = []  # route slots with rows this step
        self._read: dict[int, np.ndarray] | None = None  # slot -> counts [L, E], this step

    # -- model load ---------------------------------------------------------------------
    def attach(self, model: torch.nn.Module) -> None:
        self.attach_layers(moe_layers(model))

    def attach_layers(self, layers: list[MoELayer]) -> None:
        """Wrap these MoE blocks' routers (attach, or a test's own blocks)."""
        self.layers = layers
        self.controlled = [m for m in self.layers if m.controllable]
        if not self.controlled:
            return
        E = max(m.num_experts for m in self.controlled)
        # [2S, L, E]: slot s and its shadow s + S (recomputed rows, not counted)
        shape = (2 * self.ctx.max_num_reqs, self.ctx.num_layers, E)
        self.route = torch.zeros(shape, dtype=torch.float32, device=self.ctx.device)
        self.counts = torch.zeros(shape, dtype=torch.int32, device=self.ctx.device)
        for m in self.controlled:
            wrap_routing(m, self._routing)

    def describe(self) -> dict[str, Any]:
        if not self.controlled:
            why = next((m.why_not for m in self.layers), "")
            return {"layers": [], "why_not": why}
        m = self.controlled[0]
        return {"layers": [x.layer for x in self.controlled], "num_experts": m.num_experts,
                "top_k": m.top_k, "renormalize": m.renormalize,
                "not_controllable": {str(x.layer): x.why_not for x in self.layers
                                     if not x.controllable}}

    def _routing(self, layer, original, hidden_states, router_logits, indices_type,
                 input_ids):
        """One router's pick (inside the forward; traced in compiled mode)."""
        if self.ctx.eager and not int(self.active[0]):
            return original(hidden_states, router_logits, indices_type, input_ids=input_ids)
        slot = self.token_slot.device
        logits = torch.ops.vsteer.expert_mask(router_logits, slot, self.route, self.active,
                                              layer)
        weights, ids = original(hidden_states, logits, indices_type, input_ids=input_ids)
        return torch.ops.vsteer.expert_force(weights, ids, slot, self.route, self.counts,
                                             self.active, layer)

    # -- per request ----------------------------------------------------------------------
    def setup(self, wire: dict[str, Any], prompt_tokens: int) -> ExpertsState:
        if not self.controlled:
            raise ControlSetupError("this model has no controllable MoE layers")
        if not self.free:
            raise ControlSetupError(f"all {self.ctx.max_num_reqs} expert route slots are "
                                    "in use")
        s = self.free.pop()
        route = torch.zeros(self.route.shape[1:])  # [L, E]
        for la, e, v in wire["route"]:
            route[int(la), int(e)] = float(v)
        shadow = s + self.ctx.max_num_reqs
        self.route[s] = self.route[shadow] = route.to(self.route.device)
        self.counts[s].zero_()
        self.counts[shadow].zero_()
        rules = [[(int(la), int(e)) for la, e in pairs] for pairs in wire["rules"]]
        return ExpertsState(s, rules, bool(wire["routing"]))

    def release(self, state: ExpertsState) -> None:
        self.free.append(state.slot)

    # -- per step -------------------------------------------------------------------------
    def plan(self, rows: list[RequestRows]) -> None:
        if not rows and not self._last_t:  # nothing to write, nothing to clear
            self._ran, self._read = [], None
            return
        self.fence.wait()
        ts = self.token_slot.np
        ts[: self._last_t] = -1
        last, n = 0, 0
        self._ran = []
        self._read = None
        for r in rows:
            st: ExpertsState = r.state
            again = min(max(st.next_pos - r.position, 0), r.end - r.start)  # recomputed
            ts[r.start:r.start + again] = st.slot + self.ctx.max_num_reqs
            ts[r.start + again:r.end] = st.slot
            st.tokens = r.end - r.start - again
            st.next_pos = max(st.next_pos, r.position + r.end - r.start)
            last, n = max(last, r.end), n + r.end - r.start
            used = (st.slot, st.slot + self.ctx.max_num_reqs) if again else (st.slot,)
            for s in used:  # the shadow's counts are read (and cleared) only if it ran
                if s not in self._ran:
                    self._ran.append(s)
        self.token_slot.upload(max(last, self._last_t))
        self.fence.record()
        self._last_t = last
        self.active[0] = n

    def on_layer(self, layer: int, hidden: torch.Tensor, residual: torch.Tensor | None
                 ) -> None:
        """Nothing per decoder layer: the edits run inside the routers."""

    def collect(self, rows: RequestRows) -> dict[str, Any]:
        st: ExpertsState = rows.state
        if self._read is None:  # after the step: one read for every request, then clear
            idx = torch.tensor(self._ran, dtype=torch.long, device=self.counts.device)
            got = self.counts[idx].cpu().numpy()  # [n, L, E]
            self.counts[idx] = 0
            self._read = {s: got[i] for i, s in enumerate(self._ran)}
        counts = self._read.get(st.slot)
        if counts is None:
            return {"tokens": 0, "rules": [0] * len(st.rules)}
        out: dict[str, Any] = {"tokens": st.tokens,
                               "rules": [int(sum(counts[la, e] for la, e in pairs))
                                         for pairs in st.rules]}
        if st.routing:
            la, e = np.nonzero(counts)
            out["routing"] = [[int(a), int(b), int(counts[a, b])] for a, b in zip(la, e,
                                                                                strict=True)]
        return out

    def after_step(self) -> None:
        """A forward between steps (warm-up, dummy batch) routes no token as a
        request's: its tokens' slots are -1 until the next plan."""
        if int(self.active[0]):
            self.token_slot.device[: self._last_t].fill_(-1)
            self.active[0] = 0
