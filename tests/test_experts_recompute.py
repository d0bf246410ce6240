"""The `experts` worker over a recompute after preemption (no vLLM: the worker's own
routing edit on a stand-in router, through the real ops): recomputed positions are
routed exactly as before, and counted once."""

from __future__ import annotations

import torch

from vsteer.artifacts import ModelFingerprint
from vsteer.plugins.api import RequestRows, WorkerContext
from vsteer.plugins.experts_worker import ExpertsWorker
from vsteer.plugins.vllm_moe import MoELayer

L, E, K, H = 2, 8, 2, 4


class TopK:
    """A softmax top-k router's pick (what vLLM's _compute_routing returns)."""

    def _compute_routing(self, hidden_states, router_logits, indices_type, *, input_ids=None):
        w, ids = torch.softmax(router_logits, -1).topk(K, dim=-1)
        return w, ids.to(torch.int32)


def _worker() -> tuple[ExpertsWorker, list[TopK]]:
    ctx = WorkerContext(ModelFingerprint("Tiny", H, L), H, L, 16, 4, torch.device("cpu"),
                        torch.float32, True, 0)
    w = ExpertsWorker(ctx)
    routers = [TopK() for _ in range(L)]
    w.attach_layers([MoELayer(la, E, K, True, True, "", r) for la, r in enumerate(routers)])
    return w, routers


def _step(w: ExpertsWorker, routers, state, position: int, n: int, logits: torch.Tensor):
    rows = RequestRows(state, "r", 0, 0, n, position, n, False)
    w.plan([rows])
    picks = [r._compute_routing(None, logits[position:position + n], None)
             for r in routers]
    out = w.collect(rows)
    w.after_step()
    return picks, out


def test_a_recompute_routes_the_same_and_counts_each_position_once():
    w, routers = _worker()
    # force expert 5 at layer 0, switch expert 1 off everywhere
    state = w.setup({"route": [[0, 5, 0.5], [0, 1, -1.0], [1, 1, -1.0]],
                     "rules": [[[0, 5]], [[0, 1], [1, 1]]], "routing": True}, 6)
    logits = torch.randn(9, E, generator=torch.Generator().manual_seed(0))
    first, a = _step(w, routers, state, 0, 6, logits)  # the prompt
    assert a["tokens"] == 6 and a["rules"] == [6, 0]
    # preempted; recomputed from position 0 with two more positions (6, 7)
    again, b = _step(w, routers, state, 0, 8, logits)
    for (w0, i0), (w1, i1) in zip(first, again, strict=True):
        assert torch.equal(i0, i1[:6]) and torch.equal(w0, w1[:6])  # routed the same
    assert b["tokens"] == 2 and b["rules"] == [2, 0]
    assert sum(n for _, _, n in b["routing"]) == 2 * L * K  # two tokens, every layer, k
    assert all(e != 1 for _, e, _ in b["routing"])
    _, c = _step(w, routers, state, 8, 1, logits)  # decoding goes on
    assert c["tokens"] == 1 and c["rules"] == [1, 0]
