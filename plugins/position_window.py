"""Which token positions a steering entry acts on, and the request's steering segments.

A steering entry names its positions one of five ways (the same words as capture):

    all                  every position
    prompt | generated   the prompt's positions | every generated token's
    last                 the last prompt token
    prompt [a, b)        prompt tokens a..b-1; negative bounds count from the prompt's
                         end (-1 = the last prompt token); b = None: to the end
    generated [a, b)     generated tokens a..b-1 (0 = the first token fed back);
                         b = None: to the end of the reply

A generated token is steered when it is fed back, at its own position (as `generated`
always was): generated token g sits at position num_prompt + g.

Semantics (pure; what the planner reads):

    span(entry, P) -> [lo, hi) in absolute positions (hi None = unbounded), clipped
                      to the prompt for prompt windows
    segments(spans) -> [(lo, hi, entries active on every position in [lo, hi))], in
                      order, no two adjacent with the same entries, none empty

Each segment becomes one row of the token plan (plugins/token_plan.py), so a request's
tokens still read one int32 row index each, whatever its windows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

POSITIONS = ("all", "prompt", "generated", "last")

Span = tuple[int, int | None]  # [lo, hi) in absolute positions; hi None = unbounded


def span(positions: str, window: Sequence[int | None] | None, num_prompt: int) -> Span:
    """The absolute positions [lo, hi) a steering entry acts on in a request whose prompt
    has `num_prompt` tokens. An empty span is (lo, lo)."""
    p = num_prompt
    if positions == "all":
        return (0, None)
    if positions == "last":
        return (max(p - 1, 0), p)
    if positions == "prompt":
        a, b = (0, None) if window is None else window
        lo = _prompt_index(a, p)
        hi = p if b is None else _prompt_index(b, p)
        return (lo, max(lo, hi))
    if positions == "generated":
        a, b = (0, None) if window is None else window
        if a is None or a < 0 or (b is not None and b < 0):
            raise ValueError("generated windows count from the first generated token")
        return (p + a, None if b is None else max(p + a, p + b))
    raise ValueError(f"unknown positions {positions!r}")


def _prompt_index(i: int | None, p: int) -> int:
    if i is None:
        return 0
    return min(max(i + p if i < 0 else i, 0), p)


@dataclass
class Segment:
    """Positions [lo, hi) (hi None: unbounded) read these entries; `row` is the token
    plan row holding them once allocated (-1 before, and again once freed)."""

    lo: int
    hi: int | None
    entries: list
    row: int = -1

    def overlap(self, p: int, n: int) -> tuple[int, int] | None:
        """The part of positions [p, p + n) inside this segment, as offsets [i, j)."""
        i = max(self.lo - p, 0)
        j = n if self.hi is None else min(self.hi - p, n)
        return (i, j) if j > i else None


def segments(spans: Sequence[tuple[object, Span]]) -> list[Segment]:
    """spans: (entry, [lo, hi)) per steering entry, in the request's order (the order
    entries are applied in). Returns the request's segments."""
    live = [(e, lo, hi) for e, (lo, hi) in spans if hi is None or hi > lo]
    cuts = sorted({lo for _, lo, _ in live} | {hi for _, _, hi in live if hi is not None})
    out: list[Segment] = []
    for k, lo in enumerate(cuts):
        hi = cuts[k + 1] if k + 1 < len(cuts) else None
        active = [e for e, elo, ehi in live if elo <= lo and (ehi is None or ehi > lo)]
        if not active:
            continue
        if out and out[-1].hi == lo and out[-1].entries == active:
            out[-1].hi = hi
        else:
            out.append(Segment(lo, hi, active))
    return out
