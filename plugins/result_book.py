"""The server's book of per-request results, filled from the workers' step messages
(plugins/step_report.py) on the listener's thread, read by the server's handlers.

A handler says what it expects of each choice (`Expect`: the first step's report, so
many sampled tokens, what each control's report still misses) and waits until the book
holds it: the wait ends when
the step message carrying the last missing piece lands, not after a fixed time. A
choice whose controls the worker could not set up is complete at once (its errors say
why). Only a deadline far beyond any step (a worker that died) ends a wait early, and
then the caller reports what is missing as a coded error.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from vsteer.plugins.step_report import split_key

NOT_APPLIED = "control_not_applied"  # the worker set up none of the request's controls


# control name -> what its report still lacks, given its results so far (Control.missing)
Needs = dict[str, Callable[[list[Any]], list[str]]]


@dataclass(frozen=True)
class Expect:
    seen: bool = False  # the first step's report (the worker's setup verdict) is in
    tokens: int = 0  # this many sampled tokens (their per-token records with them)
    needs: Needs = field(default_factory=dict)


@dataclass
class ChoiceResults:
    steps: list[int] = field(default_factory=list)  # engine steps this choice ran in
    sampled: int = 0
    errors: list[dict[str, str]] = field(default_factory=list)
    extra: dict[str, list[Any]] = field(default_factory=dict)  # control -> a value per step

    @property
    def not_applied(self) -> bool:
        return any(e["code"] == NOT_APPLIED for e in self.errors)

    def missing(self, expect: Expect) -> list[str]:
        """What `expect` asks for that is not here ([] when complete)."""
        if self.not_applied:
            return []
        out = []
        if expect.seen and not self.steps:
            out.append("the worker's report of its first step")
        for name, lacks in expect.needs.items():
            out += lacks(self.extra.get(name, []))
        if self.sampled < expect.tokens:
            out.append(f"results of {expect.tokens - self.sampled} of {expect.tokens} tokens")
        return out

    def add(self, step: int, e: dict[str, Any]) -> None:
        self.steps.append(step)
        self.sampled += int(e.get("sampled", 0))
        for name, value in e.items():
            if name == "sampled":
                continue
            if name == "errors":
                self.errors.extend(value)
            else:
                self.extra.setdefault(name, []).append(value)


class ResultBook:
    def __init__(self, max_requests: int = 10000, max_traces: int = 2000) -> None:
        self._max = max_requests
        self._max_traces = max_traces
        self._requests: OrderedDict[str, dict[int, ChoiceResults]] = OrderedDict()
        # rid -> choice -> [[step, requests in that step], ...]
        self._traces: OrderedDict[str, dict[int, list[list[int]]]] = OrderedDict()
        self._cond = threading.Condition()
        self._waiters: dict[str, set[tuple[asyncio.AbstractEventLoop, asyncio.Event]]] = {}

    # -- the listener's thread ----------------------------------------------------------
    def add_step(self, msg: dict[str, Any]) -> None:
        step, batch = int(msg["step"]), int(msg.get("batch", 0))
        touched = set()
        with self._cond:
            for key, e in msg["requests"].items():
                rid, choice = split_key(key)
                self._choice(rid, choice).add(step, e)
                self._traces.setdefault(rid, {}).setdefault(choice, []).append([step, batch])
                touched.add(rid)
            while len(self._traces) > self._max_traces:
                self._traces.popitem(last=False)
            self._cond.notify_all()
            wake = [w for rid in touched for w in self._waiters.get(rid, ())]
        for loop, event in wake:
            loop.call_soon_threadsafe(event.set)

    def _choice(self, rid: str, choice: int) -> ChoiceResults:
        choices = self._requests.get(rid)
        if choices is None:
            choices = self._requests[rid] = {}
            while len(self._requests) > self._max:  # results nobody collects age out
                self._requests.popitem(last=False)
        return choices.setdefault(choice, ChoiceResults())

    # -- readers -------------------------------------------------------------------------
    def peek(self, rid: str, choice: int = 0) -> ChoiceResults:
        with self._cond:
            return self._choice(rid, choice)

    def wait(self, rid: str, expect: Expect, timeout: float, choice: int = 0
             ) -> ChoiceResults:
        """Block until `expect` holds for (rid, choice) or `timeout` passes (offline
        tools); returns the choice's results either way (check `missing`)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            res = self._choice(rid, choice)
            while res.missing(expect) and (left := deadline - time.monotonic()) > 0:
                self._cond.wait(left)
            return res

    async def wait_async(self, rid: str, expects: dict[int, Expect], timeout: float,
                         total_tokens: int = 0) -> dict[int, ChoiceResults]:
        """Await `expects` (choice -> Expect) for `rid`, and `total_tokens` sampled over
        them (n > 1: a reply counts its tokens over all choices); returns the choices'
        results when all hold or at the deadline."""
        loop = asyncio.get_running_loop()
        event = asyncio.Event()
        waiter = (loop, event)
        deadline = loop.time() + timeout
        with self._cond:
            self._waiters.setdefault(rid, set()).add(waiter)
        try:
            while True:
                with self._cond:
                    got = {c: self._choice(rid, c) for c in expects}
                    if not any(got[c].missing(x) for c, x in expects.items()) and (
                            sum(r.sampled for r in got.values()) >= total_tokens
                            or any(r.not_applied for r in got.values())):
                        return got
                    event.clear()
                left = deadline - loop.time()
                if left <= 0:
                    return got
                try:
                    await asyncio.wait_for(event.wait(), left)
                except TimeoutError:
                    pass
        finally:
            with self._cond:
                ws = self._waiters.get(rid)
                if ws is not None:
                    ws.discard(waiter)
                    if not ws:
                        del self._waiters[rid]

    def pop(self, rid: str) -> dict[int, ChoiceResults]:
        with self._cond:
            return self._requests.pop(rid, {})

    def trace(self, rid: str) -> dict[int, list[list[int]]] | None:
        """The engine steps each choice of `rid` ran in, each with the number of requests
        that step held ([[step, batch], ...]; kept after `pop`, bounded)."""
        with self._cond:
            t = self._traces.get(rid)
            return None if t is None else {c: list(s) for c, s in t.items()}
