"""MoTE's recipe for finding behaviour-linked experts: route two contrastive prompt sets
through the engine (each prompt, then the model's own greedy reply), count per
(layer, expert) the share of token rows routed there, and rank pairs by the share on
the positive set minus the share on the negative set. The top pairs, written as an
`ExpertSet`, are what `{"experts": [{"set": NAME, "op": "off"}]}` switches off.

Counts come from the routers themselves, through the `experts` control's routing
report (`{"experts": {"routing": true}}`): the same path a served request takes."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vsteer.eval_engine import EvalEngine
from vsteer.plugins.experts_control import Experts
from vsteer.plugins.result_book import Expect

REPORT_WAIT_S = 60.0  # a step report lands within a step; this only catches a dead worker


@dataclass(frozen=True)
class RoutingShares:
    counts: np.ndarray  # [L, E] routings of the set's token rows
    tokens: int  # token rows the model ran over the set

    @property
    def share(self) -> np.ndarray:
        """[L, E]: the fraction of token rows routed to each (layer, expert)."""
        return self.counts / max(self.tokens, 1)


def routing_shares(engine: EvalEngine, prompts: list[str], max_tokens: int, desc: str
                   ) -> RoutingShares:
    info = engine.hello["controls"]["experts"]
    if not info.get("layers"):
        raise ValueError("this model's experts cannot be controlled: "
                         f"{info.get('why_not') or 'it has no mixture-of-experts layers'}")
    counts = np.zeros((engine.fingerprint.num_layers, int(info["num_experts"])), np.int64)
    tokens = 0
    control = {"experts": {"routing": True}}
    for a in engine.answer(prompts, control, max_tokens, desc):
        res = engine.listener.book.wait(a.rid, Expect(tokens=len(a.token_ids)), REPORT_WAIT_S)
        engine.listener.book.pop(a.rid)
        if res.missing(Expect(tokens=len(a.token_ids))) or not res.extra.get("experts"):
            raise RuntimeError(f"the worker's routing report of {a.prompt[:40]!r} is "
                               "incomplete")
        rep = Experts().report({"rules": [], "routing": True}, res.extra["experts"])
        tokens += rep["tokens"]
        for la, d in rep["routing"].items():
            for e, n in d.items():
                counts[int(la), int(e)] += n
    return RoutingShares(counts, tokens)


@dataclass(frozen=True)
class RankedExpert:
    layer: int
    expert: int
    score: float  # positive share minus negative share
    positive: float
    negative: float


def contrast_experts(pos: RoutingShares, neg: RoutingShares, top: int, top_k: int
                     ) -> list[RankedExpert]:
    """The `top` (layer, expert) pairs routed to most more often on the positive set,
    best first, keeping at least top_k experts of every layer on (a router must still
    pick k); pairs whose score is not above 0 are never chosen."""
    diff = pos.share - neg.share  # [L, E]
    L, E = diff.shape
    order = np.lexsort((np.arange(L * E), -diff.reshape(-1)))  # by score, then position
    per_layer = [0] * L
    out: list[RankedExpert] = []
    for i in order:
        la, e = divmod(int(i), E)
        if len(out) == top or diff[la, e] <= 0:
            break
        if per_layer[la] == E - top_k:
            continue
        per_layer[la] += 1
        out.append(RankedExpert(la, e, float(diff[la, e]), float(pos.share[la, e]),
                                float(neg.share[la, e])))
    return out
