"""The `control` object of a response: what was applied (from the resolver) and what
the worker measured (from its step messages, plugins/result_book.py), built by each
control's own `report` (plugins/api.py).

A report waits for exactly what it needs (the steps of every token the reply holds, and
whatever a control's `missing` still names) and ends the moment the step message
holding the last of it lands. A part that cannot be produced is a coded entry in
`control.errors` (`report_incomplete`), never a silent null.
"""

from __future__ import annotations

import os
from functools import partial
from typing import Any

from vsteer.plugins.api import Control
from vsteer.plugins.result_book import ChoiceResults, Expect, ResultBook
from vsteer.server.control_resolver import ResolvedControl

# Only a worker that died takes this long: every step's message is sent right after it.
REPORT_DEADLINE_S = float(os.environ.get("VSTEER_REPORT_DEADLINE_S", "60"))
INCOMPLETE = "report_incomplete"


class ControlReporter:
    def __init__(self, book: ResultBook, controls: dict[str, Control] | None = None) -> None:
        from vsteer.plugins.control_registry import installed_controls

        self.book = book
        self.controls = installed_controls() if controls is None else controls

    def expect(self, resolved: ResolvedControl, tokens: int = 0) -> Expect:
        """Every control waits for the steps of every sampled token: its results of a step
        arrive with the step's message, and the reply's last step may land after its last
        token was streamed."""
        needs = {name: partial(self.controls[name].missing, resolved.applied[name])
                 for name in resolved.wire.plugins}
        return Expect(seen=True, tokens=tokens if resolved.wire.plugins else 0, needs=needs)

    async def token_parts(self, resolved: ResolvedControl, count: int
                          ) -> dict[str, list[Any]]:
        """The streaming controls' results of the reply's first `count` tokens (n = 1)."""
        got = await self.book.wait_async(resolved.wire.rid, {0: Expect(tokens=count)},
                                         REPORT_DEADLINE_S)
        return {name: got[0].extra.get(name, [])[:count] for name in resolved.streams}

    async def final(self, resolved: ResolvedControl, completion_tokens: int,
                    n: int = 1) -> dict[str, Any]:
        """The response's `control`. With n > 1 the measured parts are per choice."""
        report: dict[str, Any] = dict(resolved.applied)
        for name in resolved.runs:  # what runs only through the shared token plan
            if name not in resolved.wire.plugins:
                report[name] = self.controls[name].report(resolved.applied[name], [])
        if not resolved.active:
            return report
        report["request_id"] = resolved.wire.rid  # GET /v1/vsteer/trace/{request_id}
        rid = resolved.wire.rid
        expects = {c: self.expect(resolved, completion_tokens if n == 1 else 0)
                   for c in range(n)}
        # n > 1: the reply's token count is over all its choices
        total = completion_tokens if n > 1 and resolved.wire.plugins else 0
        got = await self.book.wait_async(rid, expects, REPORT_DEADLINE_S, total_tokens=total)
        self.book.pop(rid)
        errors: list[dict[str, str]] = []
        parts = [self._measured(resolved, got[c], expects[c], completion_tokens, errors)
                 for c in range(n)]
        if n == 1:
            report.update(parts[0])
        else:
            report["choices"] = [{"index": c, **p} for c, p in enumerate(parts)]
        if errors:
            report["errors"] = errors
        return report

    def _measured(self, resolved: ResolvedControl, res: ChoiceResults, expect: Expect,
                  tokens: int, errors: list[dict[str, str]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name in resolved.wire.plugins:
            control = self.controls[name]
            results = res.extra.get(name, [])
            if control.per_token and tokens:
                results = results[:tokens]  # one per sampled token: the reply's tokens'
            out[name] = control.report(resolved.applied[name], results)
        for e in res.errors:
            if e not in errors:
                errors.append(e)
        missing = res.missing(expect)
        if missing:
            errors.append({"code": INCOMPLETE, "message": (
                f"the worker's report lacks {', '.join(missing)} after "
                f"{REPORT_DEADLINE_S:g} s; those fields are null")})
        return out
