"""The capture control's worker half on synthetic steps (no vLLM): which staging rows
each (layer, token) goes to, chunked prefill, a recompute captured once, the report."""

from __future__ import annotations

import base64

import numpy as np
import torch

from vsteer.artifacts import ModelFingerprint
from vsteer.plugins.api import RequestRows, WorkerContext
from vsteer.plugins.capture_control import Capture
from vsteer.plugins.capture_worker import CaptureWorker

H, L = 8, 4


def _worker() -> CaptureWorker:
    ctx = WorkerContext(ModelFingerprint("LlamaForCausalLM", H, L), H, L, 32, 4,
                        torch.device("cpu"), torch.float32, True, 0)
    return CaptureWorker(ctx)


def _step(w: CaptureWorker, rows: list[RequestRows], T: int, seed: int):
    """One step: plan, every layer's op on random streams; the streams by layer."""
    w.plan(rows)
    g = torch.Generator().manual_seed(seed)
    streams = []
    for la in range(L):
        hidden, residual = torch.randn(T, H, generator=g), torch.randn(T, H, generator=g)
        w.on_layer(la, hidden, residual)
        streams.append((hidden + residual).numpy())
    return streams, [w.collect(r) for r in rows]


def test_chunked_prefill_then_decode_captures_every_position_once():
    w = _worker()
    st = w.setup({"layers": [1, 3], "positions": "all"}, prompt_tokens=5)
    want, results = [], []
    # chunk 1: prompt positions 0..2 at rows 2..5 (another request holds rows 0..1)
    s, r = _step(w, [RequestRows(st, "r", 0, 2, 5, 0, 5, False)], 6, 0)
    want.append(np.stack([s[1][2:5], s[3][2:5]])), results.append(r[0])
    # chunk 2: positions 3..4 at rows 0..1, then a decode token at row 0
    s, r = _step(w, [RequestRows(st, "r", 0, 0, 2, 3, 2, True)], 2, 1)
    want.append(np.stack([s[1][0:2], s[3][0:2]])), results.append(r[0])
    s, r = _step(w, [RequestRows(st, "r", 0, 0, 1, 5, 0, True)], 1, 2)
    want.append(np.stack([s[1][0:1], s[3][0:1]])), results.append(r[0])
    # preempted and recomputed: positions 0..5 again, nothing new until position 6
    s, r = _step(w, [RequestRows(st, "r", 0, 0, 7, 0, 5, True)], 7, 3)
    want.append(np.stack([s[1][6:7], s[3][6:7]])), results.append(r[0])
    rep = Capture().report({"layers": [1, 3], "positions": "all"}, results)
    got = np.frombuffer(base64.b64decode(rep["data"]), "<f4").reshape(rep["shape"])
    assert rep["shape"] == [2, 7, H] and "lost_tokens" not in rep
    np.testing.assert_array_equal(got, np.concatenate(want, axis=1))


def test_last_and_generated_positions():
    w = _worker()
    last = w.setup({"layers": [0], "positions": "last"}, prompt_tokens=4)
    gen = w.setup({"layers": [2], "positions": "generated"}, prompt_tokens=2)
    s, r = _step(w, [RequestRows(last, "a", 0, 0, 4, 0, 4, True),
                     RequestRows(gen, "b", 0, 4, 6, 0, 6, True)], 6, 0)
    np.testing.assert_array_equal(np.frombuffer(r[0]["data"], np.float32), s[0][3])
    assert r[1] is None  # its prompt: nothing generated yet
    s, r = _step(w, [RequestRows(last, "a", 0, 0, 1, 4, 0, True),
                     RequestRows(gen, "b", 0, 1, 2, 2, 1, True)], 2, 1)
    assert r[0] is None
    np.testing.assert_array_equal(np.frombuffer(r[1]["data"], np.float32), s[2][1])


def test_rows_that_do_not_fit_the_staging_buffer_are_reported_lost():
    w = _worker()
    w.capacity = 5
    st = w.setup({"layers": [0, 1, 2], "positions": "all"}, prompt_tokens=3)
    _, r = _step(w, [RequestRows(st, "r", 0, 0, 3, 0, 3, True)], 3, 0)  # 9 rows > 5
    assert r[0]["lost"] == 3 and r[0]["tokens"] == 0
    rep = Capture().report({"layers": [0, 1, 2], "positions": "all"}, r)
    assert rep["lost_tokens"] == 3 and rep["shape"] == [3, 0, 0]
