"""The `control` object of a response: what was applied (from the resolver) and what
the worker measured (from its step messages, plugins/result_book.py).

A report waits for exactly what it needs (a prefill decision, a probe score, the
records of every token the reply holds) and ends the moment the step message holding
the last of it lands. A part that cannot be produced is a coded entry in
`control.errors` (`report_incomplete`), never a silent null.
"""

from __future__ import annotations

import os
from typing import Any

from vsteer.plugins.api import Control
from vsteer.plugins.result_book import ChoiceResults, Expect, ResultBook
from vsteer.server import metrics
from vsteer.server.control_resolver import ResolvedControl

# Only a worker that died takes this long: every step's message is sent right after it.
REPORT_DEADLINE_S = float(os.environ.get("VSTEER_REPORT_DEADLINE_S", "60"))
INCOMPLETE = "report_incomplete"


class ControlReporter:
    def __init__(self, book: ResultBook, controls: dict[str, Control] | None = None) -> None:
        self.book = book
        self.controls = controls or {}  # installed controls (plugins/api.py)

    @staticmethod
    def _waits_for_every_token(resolved: ResolvedControl) -> bool:
        """Whether the report waits for every sampled token's step: per-token probe
        scores, and every installed control (its results of a step arrive with the
        step's message, and the reply's last step may land after its last token)."""
        w = resolved.wire
        return (w.probe is not None and w.probe.per_token) or bool(w.plugins)

    def expect(self, resolved: ResolvedControl, tokens: int = 0) -> Expect:
        w = resolved.wire
        return Expect(seen=True, decision=w.decide is not None, probe=w.probe is not None,
                      tokens=tokens if self._waits_for_every_token(resolved) else 0)

    async def probe(self, resolved: ResolvedControl) -> dict[str, Any] | None:
        """The in-prefill probe result of the reply's first choice (abstain reads it
        before the first token is shown), or None if the probe did not run."""
        if resolved.wire.probe is None:
            return None
        got = await self.book.wait_async(resolved.wire.rid, {0: Expect(probe=True)},
                                         REPORT_DEADLINE_S)
        return got[0].probe

    async def token_scores(self, resolved: ResolvedControl, count: int) -> list[Any]:
        """The first `count` per-token scores (a stream's chunks, n = 1)."""
        got = await self.book.wait_async(resolved.wire.rid, {0: Expect(tokens=count)},
                                         REPORT_DEADLINE_S)
        return list(got[0].token_scores[:count])

    async def final(self, resolved: ResolvedControl, completion_tokens: int,
                    n: int = 1) -> dict[str, Any]:
        """The response's `control`. With n > 1 the measured parts are per choice."""
        report: dict[str, Any] = dict(resolved.applied)
        if not resolved.active:
            return report
        report["request_id"] = resolved.wire.rid  # GET /v1/vsteer/trace/{request_id}
        rid = resolved.wire.rid
        expects = {c: self.expect(resolved, completion_tokens if n == 1 else 0)
                   for c in range(n)}
        # n > 1: the reply's token count is over all its choices
        total = completion_tokens if n > 1 and self._waits_for_every_token(resolved) else 0
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
        if "refusal" in resolved.applied:
            out["refusal"] = self._refusal(resolved, res)
        if "hallucination" in resolved.applied:
            out["hallucination"] = self._hallucination(resolved, res, tokens)
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

    @staticmethod
    def _refusal(resolved: ResolvedControl, res: ChoiceResults) -> dict[str, Any]:
        """{mode, triggered, score, threshold, artifact, ...}: force and ablate always
        apply; guard and controller report the worker's in-prefill decision."""
        rep = {"triggered": None, "score": None, "threshold": None, "artifact": None,
               **resolved.applied["refusal"]}
        mode = rep["mode"]
        if mode in ("force", "ablate"):
            rep["triggered"] = True
        elif resolved.wire.decide is not None and res.decision is not None:
            rep["triggered"] = bool(res.decision["fired"])
            rep["score"] = float(res.decision["score"])
            metrics.REFUSAL_SCORE.labels(mode).observe(rep["score"])
        if mode != "off":
            metrics.REFUSAL_DECISIONS.labels(mode, str(rep["triggered"]).lower()).inc()
        return rep

    @staticmethod
    def _hallucination(resolved: ResolvedControl, res: ChoiceResults, tokens: int
                       ) -> dict[str, Any]:
        """{probe, action, threshold, score, triggered, action_taken, [token_scores]}."""
        rep: dict[str, Any] = {**resolved.applied["hallucination"], "score": None,
                               "triggered": None, "action_taken": "none"}
        action = rep["action"]
        if res.probe is not None:
            rep["score"], rep["triggered"] = float(res.probe["score"]), bool(res.probe["fired"])
            metrics.HALLUCINATION_SCORE.labels(action).observe(rep["score"])
            if rep["triggered"] and action in ("abstain", "mitigate"):
                rep["action_taken"] = "abstained" if action == "abstain" else "mitigated"
        metrics.HALLUCINATION_ACTIONS.labels(action, rep["action_taken"]).inc()
        if rep["per_token"]:
            rep["token_scores"] = res.token_scores[:tokens] if tokens else res.token_scores
        return rep
