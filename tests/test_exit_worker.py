"""Early exit's own step planning (plugins/exit_worker.py: exit_groups) on synthetic
steps, through the same pure path the runtime uses: the step planner's parts, each
control's rows (installed_controls.rows_by_control), then the control's grouping."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from vsteer.plugins.exit_worker import exit_groups
from vsteer.plugins.installed_controls import rows_by_control
from vsteer.plugins.request_controls import RequestControls
from vsteer.plugins.step_planner import StepView, plan_step
from vsteer.wire import WireSpec

MODEL_A, MODEL_B = object(), object()


def _view(*reqs: tuple[str, int, int, int]) -> StepView:
    """reqs: (rid, scheduled tokens, first position, tokens the request has)."""
    qs = np.cumsum([0] + [n for _, n, _, _ in reqs])
    return StepView([r for r, *_ in reqs], qs, np.array([p for *_, p, _ in reqs]),
                    np.array([t for *_, t in reqs]))


def _rc(n_prompt: int, mode: str = "exit", model: object = MODEL_A) -> RequestControls:
    rc = RequestControls(WireSpec(rid="r"), n_prompt)
    rc.plugins["early_exit"] = SimpleNamespace(wire=SimpleNamespace(mode=mode), model=model)
    return rc


def _groups(view: StepView, reqs, can_skip: bool = True):
    rows = rows_by_control(plan_step(view, reqs), reqs, ["early_exit"])["early_exit"]
    total = int(view.query_start[-1])
    return [([(r.rid, r.end - 1) for r in members], may_skip)
            for members, may_skip in exit_groups(rows, total, can_skip)]


def test_a_step_of_exit_mode_decode_tokens_may_stop_early():
    reqs = {"a": _rc(4), "b": _rc(4)}
    assert _groups(_view(("a", 1, 6, 7), ("b", 1, 4, 5)), reqs) == [
        ([("r", 0), ("r", 1)], True)]
    # ... not without layer skipping installed
    assert _groups(_view(("a", 1, 6, 7), ("b", 1, 4, 5)), reqs, can_skip=False) == [
        ([("r", 0), ("r", 1)], False)]


def test_a_prefill_an_uncontrolled_request_observe_or_two_predictors_run_every_layer():
    reqs = {"a": _rc(4), "c": _rc(4), "plain": None, "o": _rc(4, "observe"),
            "other": _rc(4, model=MODEL_B)}
    # one prefill (its last prompt token samples): checked, but the step runs on
    assert _groups(_view(("a", 1, 6, 7), ("c", 4, 0, 4)), reqs) == [
        ([("r", 0), ("r", 4)], False)]
    # a request without early exit in the step
    assert _groups(_view(("a", 1, 6, 7), ("plain", 1, 9, 10)), reqs) == [
        ([("r", 0)], False)]
    # an observe-mode request only watches
    assert _groups(_view(("a", 1, 6, 7), ("o", 1, 6, 7)), reqs) == [
        ([("r", 0), ("r", 1)], False)]
    # one group per predictor, and then no skipping
    assert _groups(_view(("a", 1, 6, 7), ("other", 1, 6, 7)), reqs) == [
        ([("r", 0)], False), ([("r", 1)], False)]


def test_a_recompute_after_preemption_is_checked_only_when_it_samples():
    """Preempted after 5 outputs, a request recomputes prompt + outputs (15 tokens): the
    chunk that stops short samples nothing, so nothing is checked there."""
    reqs = {"a": _rc(10, "observe")}
    assert _groups(_view(("a", 8, 0, 15)), reqs) == []
    assert _groups(_view(("a", 7, 8, 15)), reqs) == [([("r", 6)], False)]


def test_the_choices_of_one_reply_are_rows_of_their_own():
    reqs = {"0_x": _rc(5), "1_x": _rc(5)}
    reqs["1_x"].choice = 1
    view = _view(("0_x", 1, 5, 6), ("1_x", 1, 5, 6))
    rows = rows_by_control(plan_step(view, reqs), reqs, ["early_exit"])["early_exit"]
    assert [(r.choice, r.end - 1) for r in rows] == [(0, 0), (1, 1)]
