"""The step planner: a pure function from one engine step's batch and the live requests'
controls to the writes the runtime makes into the shared token plan.

    plan_step(view, requests) -> StepPlan

It reads the requests' controls and changes nothing: each controlled request's rows in
the step (`Part`: what every control's `plan` gets as `RequestRows`) and the token-plan
rows its steering segments cover (`RowWrite`, named, not allocated). So every
scheduling rule (chunked prefill, preemption and recompute, decode beside another
request's prefill, `n > 1`) is unit-tested on synthetic steps
(tests/test_step_planner.py), without vLLM. Each control plans its own tables from
its parts with pure functions of its own (refusal: `plan_decision`, hallucination:
`plan_probe`, early exit: `exit_groups`), tested the same way.

Rows of request i in this step: a..b (token rows), positions p..p+(b-a); rows a..split
are prompt tokens, split..b generated ones. Steering reads positions, not rows: each of
the request's segments (plugins/position_window.py) covers the rows whose positions it
holds. The step samples a token for the request
iff its last scheduled position reaches every token it has (prompt + output): a
recompute after preemption, or a non-final prefill chunk, samples nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from vsteer.plugins.request_controls import RequestControls


@dataclass(frozen=True)
class Part:
    """One controlled request's rows in this step."""

    rid: str
    choice: int
    a: int
    b: int
    p: int
    split: int
    samples: bool  # row b - 1 samples this request's next token


@dataclass(frozen=True)
class RowWrite:
    """Token rows [start, end) read the row of the request's steering segment `segment`
    (RequestControls.segments; plugins/position_window.py)."""

    rid: str
    start: int
    end: int
    segment: int


@dataclass
class StepPlan:
    parts: list[Part] = field(default_factory=list)
    rows: list[RowWrite] = field(default_factory=list)
    capture: list[tuple[str, int, int, int]] = field(default_factory=list)  # rid, a, split, p


@dataclass(frozen=True)
class StepView:
    """The step's batch in token order (plugins/vllm_compat.step_view builds it)."""

    req_ids: list[str]
    query_start: Any  # [R+1] token offsets of each request in this step
    start_pos: Any  # [R] position of each request's first scheduled token
    num_tokens: Any  # [R] tokens each request has (prompt + output so far)


def plan_step(view: StepView, requests: Mapping[str, RequestControls | None]) -> StepPlan:
    plan = StepPlan()
    for i, rid in enumerate(view.req_ids):
        rc = requests.get(rid)
        a, b, p = int(view.query_start[i]), int(view.query_start[i + 1]), int(view.start_pos[i])
        if rc is None:
            continue
        n_prompt = rc.num_prompt_tokens
        split = a + min(max(n_prompt - p, 0), b - a)
        samples = p + (b - a) >= max(int(view.num_tokens[i]), n_prompt)
        part = Part(rid, rc.choice, a, b, p, split, samples)
        plan.parts.append(part)
        for k, seg in enumerate(rc.segments):
            hit = seg.overlap(p, b - a)
            if hit is not None:
                plan.rows.append(RowWrite(rid, a + hit[0], a + hit[1], k))
        if rc.spec.capture is not None:
            plan.capture.append((rid, a, split, p))
    return plan
