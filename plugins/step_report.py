"""One message per engine step: what the step produced for each controlled request.

The worker builds a `StepReport` while it plans a step (every controlled request in the
batch gets an entry, with how many tokens this step samples for it), fills it as the
step's results become known (host jobs during the forward, device-table jobs when the
reader has copied them off the device) and sends it once, after the last of them. The
server counts what it got per request (plugins/result_book.py): a reply's report is
complete when the steps it has seen account for every token the reply holds, so it
never waits a fixed time and never guesses.

Message:
    {"type": "step", "step": n, "batch": b,   # b: requests in the step, controlled or not
     "requests": {"<rid>:<choice>": {"sampled": k,        # tokens sampled this step
                                     "errors": [{"code", "message"}, ...],
                                     "<control>": ...}}}   # a control's results: what
                                     # its collect returned, merged with what its jobs
                                     # wrote (plugins/shared_tables.StepOut), e.g.
                                     # "refusal": {"decision": {"score", "fired", ...}}
"""

from __future__ import annotations

from typing import Any

STEP = "step"


def entry_key(rid: str, choice: int) -> str:
    """Entries are per choice: the `n` choices of one reply run as `n` engine requests
    sharing the reply's rid."""
    return f"{rid}:{choice}"


def split_key(key: str) -> tuple[str, int]:
    rid, _, choice = key.rpartition(":")
    return rid, int(choice)


class StepReport:
    __slots__ = ("step", "batch", "requests")

    def __init__(self, step: int, batch: int = 0) -> None:
        self.step = step
        self.batch = batch
        self.requests: dict[str, dict[str, Any]] = {}

    def entry(self, rid: str, choice: int = 0) -> dict[str, Any]:
        return self.requests.setdefault(entry_key(rid, choice), {"sampled": 0})

    def error(self, rid: str, choice: int, code: str, message: str) -> None:
        self.entry(rid, choice).setdefault("errors", []).append(
            {"code": code, "message": message})

    def append(self, rid: str, choice: int, field: str, item: Any) -> None:
        self.entry(rid, choice).setdefault(field, []).append(item)

    def message(self) -> dict[str, Any] | None:
        if not self.requests:
            return None
        return {"type": STEP, "step": self.step, "batch": self.batch,
                "requests": self.requests}
