"""The device job table and `torch.ops.vsteer.score_jobs` on CPU: the scores the
semantics define, forces written into slots, chunked mean pooling, rows that go
inactive after a step, and a compiled graph that replays the op with new table
contents (the property CUDA graphs rely on)."""

import math

import numpy as np
import pytest
import torch

import vsteer.kernels  # noqa: F401  (registers the ops)
from vsteer.kernels.jobs_reference import KIND_COS, KIND_SIGMOID, POOL_MEAN
from vsteer.plugins.job_table import JobTable
from vsteer.plugins.lru_index import TableFull

from job_results import finish_step

H, L = 16, 4


def _table(capacity=4, weight_rows=3, acc_rows=2):
    return JobTable(capacity, L, H, weight_rows, acc_rows, torch.device("cpu"),
                    torch.zeros(4, dtype=torch.int64))


def _slots():
    vectors = torch.randn(4, L, H)
    return vectors, 1.0 / vectors.norm(dim=-1)


def _run(t: JobTable, hidden, residual, vectors, inv, layers=range(L)):
    for la in layers:
        torch.ops.vsteer.score_jobs(hidden, residual, t.jobs_i.device, t.jobs_f.device,
                                    t.coeff.device, t.layer_index.device, t.weights, t.acc, vectors,
                                    inv, t.out,
                                    t.step, la)


def test_guard_fires_forces_its_slot_and_reports_after_the_step():
    t, (vectors, inv) = _table(), _slots()
    cond = np.random.default_rng(0).standard_normal(H).astype(np.float32)
    row = t.weight_row("guard:a", lambda: cond, set())
    h, r = torch.randn(5, H), torch.randn(5, H)
    x = h[3] + r[3]
    cos = float(x @ torch.from_numpy(cond) / x.norm())
    got = []
    t.add(1, 3, 4, KIND_COS, row, threshold=cos - 1e-3, force=(1, 2, {2: 0.5, 3: -2.0}),
          on_result=lambda s, f: got.append((s, f)))
    t.commit()
    before = vectors.clone()
    serial = int(t.step[1])
    _run(t, h, r, vectors, inv)
    assert int(t.step[1]) != serial  # steer_cpu must drop what it cached from the slots
    torch.testing.assert_close(vectors[2, 2], 0.5 * before[1, 2])
    torch.testing.assert_close(vectors[2, 3], -2.0 * before[1, 3])
    assert torch.equal(vectors[2, :2], before[2, :2])
    torch.testing.assert_close(inv[2, 3], inv[1, 3] / 2.0)
    assert got == []  # nothing is read back inside the forward pass
    finish_step(t)
    assert got[0][1] is True and got[0][0] == pytest.approx(cos, abs=1e-5)
    assert int(t.jobs_i.device[0, 0]) == -1 and int(t.step[3]) == 0  # inactive again


def test_guard_below_threshold_writes_nothing():
    t, (vectors, inv) = _table(), _slots()
    unit = np.full(H, H**-0.5, np.float32)  # guard conditions are unit vectors
    row = t.weight_row("guard:a", lambda: unit, set())
    t.add(0, 0, 1, KIND_COS, row, threshold=1.01, force=(1, 2, {3: 1.0}))  # cos <= 1
    t.commit()
    before, serial = vectors.clone(), int(t.step[1])
    _run(t, torch.randn(2, H), None, vectors, inv)
    assert torch.equal(vectors, before) and int(t.step[1]) == serial
    assert t.out[0, 1] == 0


def test_mean_over_prefill_chunks_equals_one_chunk():
    t, (vectors, inv) = _table(), _slots()
    w = np.random.default_rng(1).standard_normal(H).astype(np.float32)
    row = t.weight_row("probe:p", lambda: w, set())
    acc = t.alloc_acc()
    x = torch.randn(9, H)
    expect = float(torch.sigmoid(x.mean(0) @ torch.from_numpy(w) + 0.25))
    scores = []
    for a, b, first, final in ((0, 4, True, False), (4, 9, False, True)):
        chunk = x[a:b]
        t.add(2, 0, b - a, KIND_SIGMOID, row, pool=POOL_MEAN, bias=0.25, threshold=0.5,
              acc_row=acc, first=first, final=final, count=b,
              on_result=lambda s, f: scores.append(s))
        t.commit()
        _run(t, chunk, None, vectors, inv)
        finish_step(t)
    assert scores == [pytest.approx(expect, abs=1e-5)]  # one score, at the last chunk


def test_per_token_scores_and_inactive_rows_between_steps():
    t, (vectors, inv) = _table(), _slots()
    w = np.linspace(-1, 1, H, dtype=np.float32)
    row = t.weight_row("probe-token:p", lambda: w, set())
    h = torch.randn(3, H)
    scores = []
    t.add(0, 2, 3, KIND_SIGMOID, row, bias=-0.1, on_result=lambda s, f: scores.append((s, f)))
    t.commit()
    _run(t, h, None, vectors, inv)
    finish_step(t)
    assert scores == [(pytest.approx(float(torch.sigmoid(h[2] @ torch.from_numpy(w) - 0.1)),
                                     abs=1e-6), False)]  # threshold +inf: never fires
    t.out.fill_(7.0)
    _run(t, h, None, vectors, inv)  # a warm-up / dummy run between steps
    assert torch.equal(t.out, torch.full_like(t.out, 7.0))


def test_weight_rows_are_pinned_and_the_table_has_a_capacity():
    t = _table(capacity=1, weight_rows=2, acc_rows=1)
    a = t.weight_row("a", lambda: np.ones(H, np.float32), set())
    b = t.weight_row("b", lambda: np.full(H, 2, np.float32), {"a"})
    assert t.weight_row("a", lambda: pytest.fail("reloaded"), set()) == a
    c = t.weight_row("c", lambda: np.full(H, 3, np.float32), {"a"})  # evicts b
    assert c == b and torch.equal(t.weights[c], torch.full((H,), 3.0))
    with pytest.raises(TableFull):
        t.weight_row("d", lambda: np.zeros(H, np.float32), {"a", "c"})
    t.alloc_acc()
    with pytest.raises(TableFull):
        t.alloc_acc()
    t.add(0, 0, 1, KIND_SIGMOID, a)
    with pytest.raises(TableFull):
        t.add(0, 0, 1, KIND_SIGMOID, a)


def test_a_compiled_graph_replays_the_op_with_new_table_contents():
    """vLLM traces the forward once; per-step variation must live in the tables the op
    reads, not in the trace (under CUDA graphs, not even Python runs per step)."""
    t, (vectors, inv) = _table(), _slots()
    rng = np.random.default_rng(2)
    rows = [t.weight_row(k, lambda: rng.standard_normal(H).astype(np.float32), set())
            for k in ("w0", "w1")]
    frames = []

    def count_frames(gm, example_inputs):
        frames.append(gm)
        return gm

    @torch.compile(backend=count_frames, fullgraph=True)
    def layer_step(hidden):
        torch.ops.vsteer.score_jobs(hidden, None, t.jobs_i.device, t.jobs_f.device,
                                    t.coeff.device, t.layer_index.device, t.weights, t.acc, vectors,
                                    inv, t.out,
                                    t.step, 1)
        return hidden * 2

    h = torch.randn(6, H)
    for step, (tok, w_row) in enumerate([(0, rows[0]), (5, rows[1]), (2, rows[0])]):
        got = []
        t.add(1, tok, tok + 1, KIND_SIGMOID, w_row, on_result=lambda s, f, got=got: got.append(s))
        t.commit()
        layer_step(h)
        finish_step(t)
        expect = torch.sigmoid(h[tok] @ t.weights[w_row])
        assert got == [pytest.approx(float(expect), abs=1e-6)], step
    assert len(frames) == 1  # traced once, correct for every step's table


def test_op_is_a_no_op_without_jobs():
    t, (vectors, inv) = _table(), _slots()
    t.out.fill_(math.pi)
    before = vectors.clone()
    _run(t, torch.randn(3, H), torch.randn(3, H), vectors, inv)
    assert torch.equal(vectors, before) and bool((t.out == math.pi).all())


@pytest.mark.parametrize("residual", [True, False], ids=["pair", "single"])
def test_cpu_backend_equals_the_reference(residual):
    """score_jobs_cpu batches last-token jobs without a force and hands the rest to the
    reference: same outputs, slots and accumulators on a table of every kind."""
    from vsteer.kernels.jobs_cpu import score_jobs_cpu
    from vsteer.kernels.jobs_reference import score_jobs_reference

    g = torch.Generator().manual_seed(5)
    t = _table(capacity=40, weight_rows=3, acc_rows=2)
    for k in range(3):
        t.weight_row(f"w{k}", lambda: torch.randn(H, generator=g).numpy(), set())
    acc = t.alloc_acc()
    for i in range(30):  # per-token scores, annotate probes and guards at layers 0 and 1
        t.add(i % 2, i, i + 1, (KIND_COS, KIND_SIGMOID)[i % 3 > 0], i % 3, bias=0.1 * i,
              threshold=(math.inf, 0.5, 0.0)[i % 3])
    t.add(1, 2, 9, KIND_SIGMOID, 1, pool=POOL_MEAN, acc_row=acc, first=False, final=True,
          count=20, threshold=0.0, force=(1, 2, {3: 1.5}))
    t.add(1, 30, 31, KIND_COS, 0, threshold=-1.0, force=(2, 3, {2: -0.5}))
    t.commit()
    h = torch.randn(32, H, generator=g)
    r = torch.randn(32, H, generator=g) if residual else None
    t.acc.normal_(generator=g)
    vectors, inv = _slots()
    args = (t.jobs_i.host, t.jobs_f.host, t.coeff.host, t.layer_index.host, t.weights)
    results = []
    for fn in (score_jobs_reference, score_jobs_cpu):
        state = (t.acc.clone(), vectors.clone(), inv.clone(), torch.full((40, 2), 7.0))
        forced = fn(h, r, *args, *state, 1)
        results.append((forced, state))
    (f_ref, ref), (f_cpu, got) = results
    assert f_ref is f_cpu is True
    for a, b in zip(got, ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)
    assert bool((ref[3][1:30:2, 1] != 7.0).all())  # the layer-1 jobs scored
    assert bool((ref[3][0:30:2] == 7.0).all())  # layer-0 jobs untouched


def test_layer_index_lists_each_layers_jobs_and_empties_after_the_step():
    """The GPU kernel finds a layer's jobs through the index (O(jobs at the layer)):
    it must list exactly the rows whose LAYER is that layer, and none after finish."""
    t = _table(capacity=6)
    row = t.weight_row("w", lambda: np.ones(H, np.float32), set())
    for la in (2, 0, 2, 3, 0):
        t.add(la, 0, 1, KIND_SIGMOID, row)
    t.commit()
    idx = t.layer_index.device.tolist()
    for la in range(L):
        got = sorted(idx[L + 1 + k] for k in range(idx[la], idx[la + 1]))
        want = [j for j in range(t.num_jobs) if int(t.jobs_i.device[j, 0]) == la]
        assert got == want, la
    finish_step(t)
    idx = t.layer_index.device.tolist()
    assert all(idx[la] == idx[la + 1] for la in range(L))  # no layer has a job


def test_a_job_whose_layer_did_not_run_reports_nan_not_an_old_score():
    """Early exit skips the layers above the exit layer: a per-token job there must not
    report the score an earlier step left in `out`."""
    t, (vectors, inv) = _table(), _slots()
    row = t.weight_row("w", lambda: np.ones(H, np.float32), set())
    h = torch.randn(2, H)
    got = []
    for layers in (range(L), range(2)):  # a full step, then one that exited after layer 1
        t.add(3, 1, 2, KIND_SIGMOID, row, on_result=lambda s, f: got.append(s))
        t.commit()
        _run(t, h, None, vectors, inv, layers)
        finish_step(t)
    assert not math.isnan(got[0]) and math.isnan(got[1])
