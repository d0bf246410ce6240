"""`features` counts each position it moved once: a recompute after preemption moves
the same positions again (plan is pure host bookkeeping here, no vLLM)."""

from __future__ import annotations

import torch

from vsteer.artifacts import ModelFingerprint
from vsteer.plugins.api import RequestRows, WorkerContext
from vsteer.plugins.position_window import segments, span
from vsteer.plugins.sae_worker import FeatureState, FeaturesWorker


def _tokens(w: FeaturesWorker, st: FeatureState, position: int, n: int, prompt: int) -> int:
    rows = RequestRows(st, "r", 0, 0, n, position, max(min(prompt - position, n), 0), True)
    w.plan([rows])
    return w.collect(rows)["tokens"]


def test_a_recompute_is_moved_again_but_counted_once():
    ctx = WorkerContext(ModelFingerprint("Tiny", 4, 3), 4, 3, 32, 4, torch.device("cpu"),
                        torch.float32, True, 0)
    w = FeaturesWorker(ctx)
    w._slot_layer[1] = 1
    st = FeatureState([1], segments([((1, 0, 2.0), span("all", None, 6))]))
    assert _tokens(w, st, 0, 6, 6) == 6  # the prompt
    assert _tokens(w, st, 6, 1, 6) == 1  # a generated token
    # preempted, recomputed from position 0 with one more token: rows 0..7 move again
    assert _tokens(w, st, 0, 8, 6) == 1
    assert int(w.active[1]) == 8  # ... every row still goes through the kernel
    assert _tokens(w, st, 8, 1, 6) == 1
