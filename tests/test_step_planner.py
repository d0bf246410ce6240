"""The step planner on synthetic steps (no vLLM): which rows read which entries, which
jobs run where, what each step samples, and what a prefill job has consumed."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from vsteer.kernels.jobs_reference import KIND_COS, KIND_SIGMOID, POOL_LAST, POOL_MEAN
from vsteer.plugins.decision import Decision
from vsteer.plugins.request_controls import RequestControls
from vsteer.plugins.step_planner import HostJob, Progress, StepView, plan_step
from vsteer.wire import WireCapture, WireDecide, WireSpec


def _view(*reqs: tuple[str, int, int, int]) -> StepView:
    """reqs: (rid, scheduled tokens, first position, tokens the request has)."""
    qs = np.cumsum([0] + [n for _, n, _, _ in reqs])
    return StepView([r for r, *_ in reqs], qs, np.array([p for *_, p, _ in reqs]),
                    np.array([t for *_, t in reqs]))


def _rc(n_prompt: int, steer: bool = True, spec: WireSpec | None = None, **kw
        ) -> RequestControls:
    rc = RequestControls(spec or WireSpec(rid="r"), n_prompt, **kw)
    if steer:
        rc.add_entry("k", 0, 1.0, "add", "all")
    return rc


def _guard(window: int = 1, linear: bool = False, row: int = 3) -> Decision:
    w = WireDecide(kind="guard", layer=4, direction_path="", direction_sha256="",
                   force_layers=[5, 6], source_key="s", target_key="t", threshold=0.3,
                   scale=2.0)
    return Decision(w, 1, 2, weight_row=row, linear=linear, window=window, acc_row=7,
                    bias=0.5)


def _probe(pooling: str = "last", token_row: int = -1, action: str = "annotate"):
    probe = SimpleNamespace(layer=3, token_layer=9, pooling=pooling, bias=0.1,
                            token_bias=0.2)
    wire = SimpleNamespace(action=action, threshold=0.6, mitigate_layers=[4], scale=1.0)
    return SimpleNamespace(probe=probe, wire=wire, layer=3, token_layer=9, weight_row=5,
                           token_row=token_row, acc_row=-1, acc_n=0, done=False,
                           source_slot=-1, target_slot=-1)


def _apply_progress(plan, requests) -> None:
    for pg in plan.progress:
        run = getattr(requests[pg.rid], pg.target)
        run.acc_n, run.done = pg.acc_n, pg.done


def test_a_linear_guard_window_accumulates_across_prefill_chunks():
    rc = _rc(10, decision=_guard(window=8, linear=True))
    reqs = {"a": rc}
    first = plan_step(_view(("a", 6, 0, 10)), reqs)  # positions 0..5: window is 2..9
    (job,) = first.table_jobs
    assert job.result == "" and job.job["kind"] == KIND_SIGMOID
    assert job.job["pool"] == POOL_MEAN and (job.job["start"], job.job["end"]) == (2, 6)
    assert job.job["first"] and not job.job["final"] and job.job["count"] == 4
    assert first.progress == [Progress("a", "decision", 4, False)]
    assert not first.parts[0].samples  # a non-final chunk samples nothing
    assert rc.decision.acc_n == 0  # the planner changed nothing
    _apply_progress(first, reqs)
    second = plan_step(_view(("a", 4, 6, 10)), reqs)
    (job,) = second.table_jobs
    assert job.result == "guard" and not job.job["first"] and job.job["final"]
    assert job.job["count"] == 8 and (job.job["start"], job.job["end"]) == (0, 4)
    assert job.job["force"] == (1, 2, {5: 2.0, 6: 2.0})
    assert second.parts[0].samples
    _apply_progress(second, reqs)
    assert plan_step(_view(("a", 1, 10, 11)), reqs).table_jobs == []  # decided: no more


def test_a_cosine_guard_scores_only_the_chunk_holding_the_last_prompt_token():
    reqs = {"a": _rc(10, decision=_guard())}
    assert plan_step(_view(("a", 6, 0, 10)), reqs).table_jobs == []
    (job,) = plan_step(_view(("a", 4, 6, 10)), reqs).table_jobs
    assert job.job["kind"] == KIND_COS and job.job["pool"] == POOL_LAST
    assert (job.job["start"], job.job["end"]) == (3, 4)


def test_a_recompute_after_preemption_samples_only_when_it_catches_up():
    """Preempted after 5 outputs, a request recomputes prompt + outputs (15 tokens): a
    chunk that stops short samples nothing (no per-token score; early exit's own planning
    of the same steps: tests/test_exit_worker.py)."""
    probe = _probe(token_row=8)
    probe.done = True
    rc = _rc(10, probe=probe)
    reqs = {"a": rc}
    short = plan_step(_view(("a", 8, 0, 15)), reqs)
    assert not short.parts[0].samples and short.table_jobs == []
    assert [(w.start, w.end, w.segment) for w in short.rows] == [(0, 8, 0)]
    rest = plan_step(_view(("a", 7, 8, 15)), reqs)
    assert rest.parts[0].samples
    assert [(w.start, w.end, w.segment) for w in rest.rows] == [(0, 7, 0)]  # `all`
    (tok,) = rest.table_jobs
    assert tok.result == "token_score" and (tok.job["start"], tok.job["end"]) == (6, 7)


def test_position_windows_cover_the_rows_their_positions_are_in():
    """prompt [2, -1), the last prompt token, generated [1, 3) and `all`, on a 6-token
    prompt, over a chunked prefill and decode: each row reads the segment of the
    entries active at its position."""
    rc = RequestControls(WireSpec(rid="r"), 6)
    rc.add_entry("w", 0, 1.0, "add", "prompt", (2, -1))
    rc.add_entry("l", 1, 1.0, "add", "last")
    rc.add_entry("g", 2, 1.0, "add", "generated", (1, 3))
    rc.add_entry("a", 3, 1.0, "add", "all")
    segs = [(s.lo, s.hi, [e[0] for e in s.entries]) for s in rc.segments]
    assert segs == [(0, 2, [3]), (2, 5, [0, 3]), (5, 6, [1, 3]), (6, 7, [3]),
                    (7, 9, [2, 3]), (9, None, [3])]
    reqs = {"r": rc}
    chunk = plan_step(_view(("r", 4, 0, 6)), reqs)  # positions 0..3
    assert [(w.start, w.end, w.segment) for w in chunk.rows] == [(0, 2, 0), (2, 4, 1)]
    rest = plan_step(_view(("r", 2, 4, 6)), reqs)  # 4..5
    assert [(w.start, w.end, w.segment) for w in rest.rows] == [(0, 1, 1), (1, 2, 2)]
    # generated token g sits at position 6 + g: g = 0 is outside [1, 3), g = 1, 2 inside
    assert [w.segment for w in plan_step(_view(("r", 1, 6, 7)), reqs).rows] == [3]
    assert [w.segment for w in plan_step(_view(("r", 1, 7, 8)), reqs).rows] == [4]
    assert [w.segment for w in plan_step(_view(("r", 1, 8, 9)), reqs).rows] == [4]
    assert [w.segment for w in plan_step(_view(("r", 1, 9, 10)), reqs).rows] == [5]


def test_a_window_no_position_reaches_steers_nothing():
    rc = RequestControls(WireSpec(rid="r"), 3)
    rc.add_entry("w", 0, 1.0, "add", "prompt", (5, 9))  # past a 3-token prompt
    rc.add_entry("v", 1, 1.0, "add", "prompt", (-2, -2))
    assert rc.segments == []
    assert plan_step(_view(("r", 3, 0, 3)), {"r": rc}).rows == []


def test_decode_beside_another_requests_prefill():
    reqs = {"dec": _rc(12), "pre": _rc(10, decision=_guard(row=-1)), "plain": None}
    step = plan_step(_view(("dec", 1, 12, 13), ("plain", 3, 0, 3), ("pre", 10, 0, 10)),
                     reqs)
    assert [(p.rid, p.a, p.b, p.split, p.samples) for p in step.parts] == [
        ("dec", 0, 1, 0, True), ("pre", 4, 14, 14, True)]
    assert [(w.rid, w.start, w.end, w.segment) for w in step.rows] == [
        ("dec", 0, 1, 0), ("pre", 4, 14, 0)]
    # a controller (no table row) decides on the host at the last prompt token
    assert step.host_jobs == [HostJob("pre", 4, "controller", (13,))]


def test_the_choices_of_one_reply_are_planned_apart():
    reqs = {"0_x": _rc(5, choice=0), "1_x": _rc(5, choice=1)}
    step = plan_step(_view(("0_x", 1, 5, 6), ("1_x", 1, 5, 6)), reqs)
    assert [(p.rid, p.choice, p.a) for p in step.parts] == [("0_x", 0, 0), ("1_x", 1, 1)]


def test_per_token_scores_of_decoding_requests_are_at_their_sampling_rows():
    def scored():
        return _rc(4, probe=SimpleNamespace(**{**vars(_probe(token_row=8)), "done": True}))

    reqs = {"a": scored(), "b": scored()}
    step = plan_step(_view(("a", 1, 6, 7), ("b", 1, 4, 5)), reqs)
    assert [(j.rid, j.result, j.job["start"]) for j in step.table_jobs] == [
        ("a", "token_score", 0), ("b", "token_score", 1)]


def test_a_mean_probe_restarts_its_pool_on_a_recompute():
    probe = _probe(pooling="mean")
    probe.acc_n = 6  # pooled before the preemption
    step = plan_step(_view(("a", 10, 0, 10)), {"a": _rc(10, probe=probe)})
    (job,) = step.table_jobs
    assert job.job["first"] and job.job["count"] == 10 and job.result == "probe"
    assert step.progress == [Progress("a", "probe", 10, True)]


def test_an_abstaining_probe_marks_its_final_job():
    step = plan_step(_view(("a", 4, 0, 4)), {"a": _rc(4, probe=_probe(action="abstain"))})
    (job,) = step.table_jobs
    assert job.abstain and job.result == "probe" and job.job["start"] == 3


def test_a_full_batch_never_needs_more_job_rows_than_the_table_has():
    """The job table holds 3 rows per scheduled request (runtime.py): a guard, a probe
    chunk and a per-token score at most, whatever the mix."""
    reqs, sched = {}, []
    for i in range(16):
        reqs[f"r{i}"] = _rc(6, decision=_guard(window=3, linear=True),
                            probe=_probe(pooling="mean", token_row=8),
                            spec=WireSpec(rid=f"r{i}", capture=WireCapture([1])))
        sched.append((f"r{i}", 6, 0, 6))
    step = plan_step(_view(*sched), reqs)
    assert len(step.table_jobs) == 3 * 16 and len(step.capture) == 16
    for rid in reqs:
        assert sum(j.rid == rid for j in step.table_jobs) <= 3
