"""The step planner on synthetic steps (no vLLM): which rows read which entries, what
each step samples; and, through the same pure path the runtime takes (the planner's
parts, each control's rows, the control's own planner), which jobs the refusal and
hallucination controls run where and what a prefill job has consumed."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from vsteer.kernels.jobs_reference import KIND_COS, KIND_SIGMOID, POOL_LAST, POOL_MEAN
from vsteer.plugins.decision import Decision
from vsteer.plugins.hallucination_worker import plan_probe
from vsteer.plugins.installed_controls import rows_by_control
from vsteer.plugins.refusal_worker import RefusalState, plan_decision
from vsteer.plugins.request_controls import RequestControls
from vsteer.plugins.step_planner import StepView, plan_step
from vsteer.wire import WireCapture, WireDecide, WireSpec


def _view(*reqs: tuple[str, int, int, int]) -> StepView:
    """reqs: (rid, scheduled tokens, first position, tokens the request has)."""
    qs = np.cumsum([0] + [n for _, n, _, _ in reqs])
    return StepView([r for r, *_ in reqs], qs, np.array([p for *_, p, _ in reqs]),
                    np.array([t for *_, t in reqs]))


def _rc(n_prompt: int, steer: bool = True, spec: WireSpec | None = None,
        decision: Decision | None = None, probe=None, **kw) -> RequestControls:
    rc = RequestControls(spec or WireSpec(rid="r"), n_prompt, **kw)
    if steer:
        rc.add_entry("k", 0, 1.0, "add", "all")
    if decision is not None:
        rc.plugins["refusal"] = RefusalState(decision, n_prompt)
    if probe is not None:
        rc.plugins["hallucination"] = probe
    return rc


def _guard(window: int = 1, linear: bool = False, row: int = 3) -> Decision:
    w = WireDecide(kind="guard", layer=4, direction_path="", direction_sha256="",
                   force_layers=[5, 6], source_key="s", threshold=0.3, scale=2.0)
    return Decision(w, 1, 2, weight_row=row, linear=linear, window=window, acc_row=7,
                    bias=0.5)


def _probe(pooling: str = "last", token_row: int = -1, action: str = "annotate"):
    probe = SimpleNamespace(layer=3, token_layer=9, pooling=pooling, bias=0.1,
                            token_bias=0.2)
    wire = SimpleNamespace(action=action, threshold=0.6, mitigate_layers=[4], scale=1.0)
    return SimpleNamespace(probe=probe, wire=wire, layer=3, token_layer=9, weight_row=5,
                           token_row=token_row, acc_row=-1, acc_n=0, done=False,
                           source_slot=-1, target_slot=-1)


def _decisions(view: StepView, reqs) -> list:
    """Each refusal request's DecisionStep in this step (None: nothing to do), by the
    same pure path the runtime takes; the request's progress is left as it was."""
    rows = rows_by_control(plan_step(view, reqs), reqs, ["refusal", "hallucination"])
    return [(r.rid, plan_decision(r.state.decision, r, r.state.prompt_tokens))
            for r in rows["refusal"]]


def _probes(view: StepView, reqs) -> list:
    rows = rows_by_control(plan_step(view, reqs), reqs, ["refusal", "hallucination"])
    keys = [_rid_of(reqs, r) for r in rows["hallucination"]]  # the engine's request ids
    return [(k, plan_probe(r.state, r, reqs[k].num_prompt_tokens))
            for k, r in zip(keys, rows["hallucination"], strict=True)]


def _rid_of(reqs, r) -> str:
    return next(k for k, rc in reqs.items() if rc is not None and rc.plugins.get(
        "hallucination") is r.state)


def _store(d: Decision, step) -> None:
    """What the refusal worker stores after planning a step (RefusalWorker.plan)."""
    if step is not None and step.job is not None:
        d.acc_n, d.done = step.acc_n, step.final


def test_a_linear_guard_window_accumulates_across_prefill_chunks():
    d = _guard(window=8, linear=True)
    reqs = {"a": _rc(10, decision=d)}
    view = _view(("a", 6, 0, 10))  # positions 0..5: window is 2..9
    [(_, first)] = _decisions(view, reqs)
    job = first.job
    assert not first.final and job["kind"] == KIND_SIGMOID
    assert job["pool"] == POOL_MEAN and (job["start"], job["end"]) == (2, 6)
    assert job["first"] and not job["final"] and job["count"] == 4
    assert first.acc_n == 4
    assert not plan_step(view, reqs).parts[0].samples  # a non-final chunk samples nothing
    assert d.acc_n == 0  # the planner changed nothing
    _store(d, first)
    [(_, second)] = _decisions(_view(("a", 4, 6, 10)), reqs)
    job = second.job
    assert second.final and not job["first"] and job["final"]
    assert job["count"] == 8 and (job["start"], job["end"]) == (0, 4)
    assert job["force"] == (1, 2, {5: 2.0, 6: 2.0})
    assert plan_step(_view(("a", 4, 6, 10)), reqs).parts[0].samples
    _store(d, second)
    assert _decisions(_view(("a", 1, 10, 11)), reqs) == [("r", None)]  # decided: no more


def test_a_cosine_guard_scores_only_the_chunk_holding_the_last_prompt_token():
    reqs = {"a": _rc(10, decision=_guard())}
    assert _decisions(_view(("a", 6, 0, 10)), reqs) == [("r", None)]
    [(_, step)] = _decisions(_view(("a", 4, 6, 10)), reqs)
    assert step.job["kind"] == KIND_COS and step.job["pool"] == POOL_LAST
    assert (step.job["start"], step.job["end"]) == (3, 4)


def test_a_recompute_after_preemption_samples_only_when_it_catches_up():
    """Preempted after 5 outputs, a request recomputes prompt + outputs (15 tokens): a
    chunk that stops short samples nothing (no per-token score; early exit's own planning
    of the same steps: tests/test_exit_worker.py)."""
    probe = _probe(token_row=8)
    probe.done = True
    reqs = {"a": _rc(10, probe=probe)}
    short = plan_step(_view(("a", 8, 0, 15)), reqs)
    assert not short.parts[0].samples
    [(_, s)] = _probes(_view(("a", 8, 0, 15)), reqs)
    assert s.prefill is None and s.token is None
    assert [(w.start, w.end, w.segment) for w in short.rows] == [(0, 8, 0)]
    rest = plan_step(_view(("a", 7, 8, 15)), reqs)
    assert rest.parts[0].samples
    assert [(w.start, w.end, w.segment) for w in rest.rows] == [(0, 7, 0)]  # `all`
    [(_, s)] = _probes(_view(("a", 7, 8, 15)), reqs)
    assert s.prefill is None and (s.token["start"], s.token["end"]) == (6, 7)


def test_a_guard_decided_before_a_preemption_is_not_decided_again():
    d = _guard()
    reqs = {"a": _rc(4, decision=d)}
    [(_, step)] = _decisions(_view(("a", 4, 0, 4)), reqs)
    assert step.final
    _store(d, step)
    # recomputed from scratch after 3 outputs: the private slot keeps its force
    assert _decisions(_view(("a", 7, 0, 7)), reqs) == [("r", None)]


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
    controller = _guard(row=-1)  # a controller: no table row, a host job
    reqs = {"dec": _rc(12), "pre": _rc(10, decision=controller), "plain": None}
    view = _view(("dec", 1, 12, 13), ("plain", 3, 0, 3), ("pre", 10, 0, 10))
    step = plan_step(view, reqs)
    assert [(p.rid, p.a, p.b, p.split, p.samples) for p in step.parts] == [
        ("dec", 0, 1, 0, True), ("pre", 4, 14, 14, True)]
    assert [(w.rid, w.start, w.end, w.segment) for w in step.rows] == [
        ("dec", 0, 1, 0), ("pre", 4, 14, 0)]
    # a controller decides on the host at the last prompt token's row
    [(_, s)] = _decisions(view, reqs)
    assert s.job is None and s.host_row == 13 and s.final


def test_the_choices_of_one_reply_are_planned_apart():
    reqs = {"0_x": _rc(5, choice=0, probe=_probe(token_row=8)),
            "1_x": _rc(5, choice=1, probe=_probe(token_row=8))}
    for rc in reqs.values():
        rc.plugins["hallucination"].done = True
    view = _view(("0_x", 1, 5, 6), ("1_x", 1, 5, 6))
    step = plan_step(view, reqs)
    assert [(p.rid, p.choice, p.a) for p in step.parts] == [("0_x", 0, 0), ("1_x", 1, 1)]
    rows = rows_by_control(step, reqs, ["hallucination"])["hallucination"]
    assert [(r.choice, r.end - 1) for r in rows] == [(0, 0), (1, 1)]  # results apart


def test_per_token_scores_of_decoding_requests_are_at_their_sampling_rows():
    def scored():
        return _rc(4, probe=SimpleNamespace(**{**vars(_probe(token_row=8)), "done": True}))

    reqs = {"a": scored(), "b": scored()}
    steps = _probes(_view(("a", 1, 6, 7), ("b", 1, 4, 5)), reqs)
    assert [(rid, s.token["start"], s.token["kind"]) for rid, s in steps] == [
        ("a", 0, KIND_SIGMOID), ("b", 1, KIND_SIGMOID)]


def test_a_mean_probe_restarts_its_pool_on_a_recompute():
    probe = _probe(pooling="mean")
    probe.acc_n = 6  # pooled before the preemption
    [(_, s)] = _probes(_view(("a", 10, 0, 10)), {"a": _rc(10, probe=probe)})
    assert s.prefill["first"] and s.prefill["count"] == 10 and s.final
    assert s.acc_n == 10


def test_an_abstaining_probes_final_job_is_the_one_the_sampler_reads():
    [(_, s)] = _probes(_view(("a", 4, 0, 4)), {"a": _rc(4, probe=_probe(action="abstain"))})
    assert s.final and s.prefill["start"] == 3 and s.prefill["final"]
    # a non-final chunk of a last-token probe has no job at all
    [(_, s)] = _probes(_view(("a", 2, 0, 4)), {"a": _rc(4, probe=_probe(action="abstain"))})
    assert s.prefill is None and not s.final


def test_a_mitigating_probe_forces_its_private_slot_when_it_fires():
    probe = _probe(action="mitigate")
    probe.source_slot, probe.target_slot = 3, 4
    [(_, s)] = _probes(_view(("a", 4, 0, 4)), {"a": _rc(4, probe=probe)})
    assert s.prefill["force"] == (3, 4, {4: 1.0})


def test_a_full_batch_never_needs_more_job_rows_than_the_table_has():
    """The job table holds 3 rows per scheduled request (runtime.py): a guard, a probe
    chunk and a per-token score at most, whatever the mix."""
    reqs, sched = {}, []
    for i in range(16):
        reqs[f"r{i}"] = _rc(6, decision=_guard(window=3, linear=True),
                            probe=_probe(pooling="mean", token_row=8),
                            spec=WireSpec(rid=f"r{i}", capture=WireCapture([1])))
        sched.append((f"r{i}", 6, 0, 6))
    view = _view(*sched)
    jobs = [(rid, s.job) for rid, s in _decisions(view, reqs) if s and s.job] + [
        (rid, j) for rid, s in _probes(view, reqs) for j in (s.prefill, s.token) if j]
    assert len(jobs) == 3 * 16 and len(plan_step(view, reqs).capture) == 16
    for rid in reqs:
        assert sum(r == rid for r, _ in jobs) <= 3
