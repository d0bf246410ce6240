"""The response's `control` report from the result book: complete when its step
messages are in, per choice for n > 1, and a coded `report_incomplete` (never a silent
null) when the worker never answers."""

from __future__ import annotations

import asyncio

import pytest

from vsteer.plugins.api import Control
from vsteer.plugins.result_book import ResultBook
from vsteer.server import control_report
from vsteer.server.control_report import INCOMPLETE, ControlReporter
from vsteer.server.control_resolver import ResolvedControl
from vsteer.wire import WireSpec

APPLIED = {"hallucination": {"probe": "p", "action": "annotate", "threshold": 0.5,
                             "per_token": True, "pooling": "last"}}


def _resolved() -> ResolvedControl:
    """A per-token hallucination probe (its step values: plugins/hallucination_worker)."""
    return ResolvedControl(WireSpec(rid="r", plugins={"hallucination": "{}"}), dict(APPLIED),
                           runs=["hallucination"], streams=["hallucination"])


def _step(n: int, **entries) -> dict:
    return {"type": "step", "step": n, "batch": 2, "requests": entries}


def test_a_complete_report_has_every_token_and_no_error():
    book = ResultBook()
    book.add_step(_step(1, **{"r:0": {"sampled": 1, "hallucination": {"probe": {
        "score": 0.7, "fired": True, "action": "annotate"}, "token": 0.1}}}))
    book.add_step(_step(2, **{"r:0": {"sampled": 1, "hallucination": {"token": 0.2}}}))
    rep = asyncio.run(ControlReporter(book).final(_resolved(), 2))
    assert rep["hallucination"]["score"] == 0.7 and rep["hallucination"]["triggered"]
    assert rep["hallucination"]["token_scores"] == [0.1, 0.2]
    assert rep["request_id"] == "r" and "errors" not in rep


def test_n_choices_are_reported_apart():
    book = ResultBook()
    book.add_step(_step(1, **{f"r:{c}": {"sampled": 1, "hallucination": {"probe": {
        "score": 0.2, "fired": False, "action": "annotate"}, "token": c / 10}}
        for c in range(2)}))
    book.add_step(_step(2, **{"r:1": {"sampled": 1, "hallucination": {"token": 0.5}}}))
    rep = asyncio.run(ControlReporter(book).final(_resolved(), 3, n=2))
    assert [c["hallucination"]["token_scores"] for c in rep["choices"]] == [[0.0],
                                                                             [0.1, 0.5]]


def test_a_silent_worker_gives_a_coded_error_not_a_silent_null(monkeypatch):
    monkeypatch.setattr(control_report, "REPORT_DEADLINE_S", 0.2)
    book = ResultBook()
    book.add_step(_step(1, **{"r:0": {"sampled": 1, "hallucination": {"token": 0.3}}}))
    rep = asyncio.run(ControlReporter(book).final(_resolved(), 3))
    assert rep["hallucination"]["score"] is None
    (err,) = rep["errors"]
    assert err["code"] == INCOMPLETE
    assert "hallucination probe score" in err["message"] and "2 of 3 tokens" in err["message"]


@pytest.mark.parametrize("code", ["control_not_applied"])
def test_a_request_the_worker_could_not_set_up_reports_at_once(code):
    book = ResultBook()
    book.add_step(_step(1, **{"r:0": {"sampled": 0, "errors": [
        {"code": code, "message": "no control of this request was applied: x"}]}}))
    rep = asyncio.run(asyncio.wait_for(ControlReporter(book).final(_resolved(), 5), 5))
    assert rep["errors"] == [{"code": code,
                              "message": "no control of this request was applied: x"}]


def test_a_steering_only_report_waits_for_the_workers_setup_verdict():
    """No measured part, but the first step's message says whether the worker applied
    the control at all (a vector deleted after validation): the report waits for it."""
    from vsteer.wire import WireSteer

    entry = WireSteer(key="k", path="", sha256="", layers=[1], scale=1.0, op="add",
                      positions="all")
    resolved = ResolvedControl(WireSpec(rid="s", steer=[entry]), {"steer": [{}]})
    book = ResultBook()

    async def main():
        async def later():
            await asyncio.sleep(0.2)
            book.add_step(_step(1, **{"s:0": {"sampled": 1, "errors": [
                {"code": "control_not_applied", "message": "vector gone"}]}}))

        task = asyncio.create_task(later())
        rep = await ControlReporter(book).final(resolved, 4)
        await task
        return rep

    rep = asyncio.run(main())
    assert rep["errors"] == [{"code": "control_not_applied", "message": "vector gone"}]


class _PerToken(Control):
    """An installed control with one result per sampled token (like early_exit)."""

    name, schema, per_token = "tok", None, True

    def resolve(self, request, ctx):
        raise NotImplementedError

    def worker(self, ctx):
        raise NotImplementedError

    def report(self, applied, results):
        return {**applied, "results": results}


def test_an_installed_controls_report_waits_for_its_last_tokens_step():
    """Its results of a step come with that step's message, which may land after the
    reply's last token: the report waits for every token's step, and a per-token
    control gets exactly the reply's tokens' results."""
    resolved = ResolvedControl(WireSpec(rid="t", plugins={"tok": "{}"}), {"tok": {"a": 1}})
    book = ResultBook()
    book.add_step(_step(1, **{"t:0": {"sampled": 1, "tok": 10}}))

    async def main():
        async def later():
            await asyncio.sleep(0.2)
            book.add_step(_step(2, **{"t:0": {"sampled": 1, "tok": 11}}))
            book.add_step(_step(3, **{"t:0": {"sampled": 1, "tok": 12}}))

        task = asyncio.create_task(later())
        rep = await ControlReporter(book, {"tok": _PerToken()}).final(resolved, 2)
        await task
        return rep

    rep = asyncio.run(main())
    assert rep["tok"] == {"a": 1, "results": [10, 11]} and "errors" not in rep
