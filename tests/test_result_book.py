"""The server's book of per-request results: a reply's report is complete when the step
messages it needs have landed (no fixed wait), choices of one reply stay apart, and a
worker that never answers ends a wait only at the deadline, with what is missing."""

from __future__ import annotations

import asyncio
import threading
import time

from vsteer.plugins.result_book import NOT_APPLIED, Expect, ResultBook


def _step(n: int, **entries: dict) -> dict:
    return {"type": "step", "step": n, "requests": entries}


def _needs_decision(results: list) -> list[str]:
    """A control's `missing` (here: refusal's, plugins/refusal_control.py)."""
    return [] if any("decision" in v for v in results) else ["refusal decision"]


def _needs_probe(results: list) -> list[str]:
    return [] if any("probe" in v for v in results) else ["hallucination probe score"]


def test_a_report_is_complete_when_its_tokens_and_prefill_results_are_in():
    book = ResultBook()
    x = Expect(tokens=2, needs={"refusal": _needs_decision})
    book.add_step(_step(1, **{"r:0": {"sampled": 1, "refusal": {"decision": {
        "score": 0.2, "fired": False}}}}))
    assert book.peek("r").missing(x) == ["results of 1 of 2 tokens"]
    book.add_step(_step(2, **{"r:0": {"sampled": 1, "hallucination": {"token": 0.5}}}))
    res = book.peek("r")
    assert res.missing(x) == [] and res.steps == [1, 2]
    assert res.extra["hallucination"] == [{"token": 0.5}]
    assert book.peek("r").missing(Expect(needs={"hallucination": _needs_probe})) == [
        "hallucination probe score"]


def test_choices_of_one_reply_are_kept_apart():
    book = ResultBook()
    book.add_step(_step(1, **{"r:0": {"sampled": 1, "hallucination": {"token": 0.1}},
                              "r:1": {"sampled": 1, "hallucination": {"token": 0.9}}}))
    assert book.peek("r", 0).extra["hallucination"] == [{"token": 0.1}]
    assert book.peek("r", 1).extra["hallucination"] == [{"token": 0.9}]
    assert book.trace("r") == {0: [[1, 0]], 1: [[1, 0]]}


def test_a_request_whose_controls_were_not_set_up_is_complete_at_once():
    book = ResultBook()
    book.add_step(_step(1, **{"r:0": {"sampled": 0, "errors": [
        {"code": NOT_APPLIED, "message": "no control was applied"}]}}))
    assert book.peek("r").missing(Expect(tokens=9, needs={"refusal": _needs_decision})) == []


def test_an_async_wait_ends_when_the_message_lands_not_after_a_fixed_time():
    book = ResultBook()

    def later():
        time.sleep(0.2)
        book.add_step(_step(7, **{"r:0": {"sampled": 3}}))

    async def main():
        threading.Thread(target=later).start()
        t0 = time.monotonic()
        got = await book.wait_async("r", {0: Expect(tokens=3)}, timeout=30.0)
        return got, time.monotonic() - t0

    got, waited = asyncio.run(main())
    assert got[0].sampled == 3 and 0.15 < waited < 5.0


def test_a_wait_on_a_silent_worker_ends_at_the_deadline_with_what_is_missing():
    book = ResultBook()
    x = Expect(needs={"hallucination": _needs_probe})
    got = asyncio.run(book.wait_async("r", {0: x}, timeout=0.2))
    assert got[0].missing(x) == ["hallucination probe score"]
    assert not book._waiters  # the waiter is gone


def test_results_nobody_collects_age_out_oldest_first():
    book = ResultBook(max_requests=2)
    for i in range(3):
        book.add_step(_step(i, **{f"r{i}:0": {"sampled": 1}}))
    assert book.pop("r0") == {} and book.pop("r2")[0].sampled == 1
