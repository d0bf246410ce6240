"""`control` on the Responses API (`POST /v1/responses`): vLLM's handler returns a
Response object or a stream of typed events; the report rides on the Response object
(`response.control`), in a stream on the `response.completed` event's response."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any

from vsteer.server.control_report import ControlReporter
from vsteer.server.control_resolver import ResolvedControl

COMPLETED = "response.completed"
INCOMPLETE = "response.incomplete"


def output_tokens(data: dict[str, Any]) -> int:
    return int((data.get("usage") or {}).get("output_tokens") or 0)


def replace_output_text(data: dict[str, Any], text: str) -> None:
    """A Response whose text a control replaced (an abstaining probe's)."""
    for item in data.get("output") or []:
        if item.get("type") == "message":
            for part in item.get("content") or []:
                if part.get("type") == "output_text":
                    part["text"] = text


def mark_incomplete(data: dict[str, Any], reason: str) -> None:
    """A Response a control ended early (`reason` as in OpenAI's incomplete_details)."""
    data["status"] = "incomplete"
    data["incomplete_details"] = {"reason": reason}


async def responses_stream(events: AsyncIterator[Any], resolved: ResolvedControl,
                           reporter: ControlReporter, release: Callable[[], None],
                           count_usage: Callable[[dict[str, Any] | None], None],
                           finish_reason: Callable[[dict[str, Any]], str | None]
                           ) -> AsyncIterator[str]:
    """vLLM's events as SSE, the `control` report on the completed response; a response
    a control ended (finish_reason(report) names why) is `response.incomplete`."""
    try:
        async for event in events:
            kind = getattr(event, "type", "unknown")
            if kind != COMPLETED:
                yield (f"event: {kind}\ndata: "
                       f"{event.model_dump_json(indent=None, by_alias=True)}\n\n")
                continue
            data = event.model_dump(mode="json", by_alias=True)
            resp = data.get("response") or {}
            count_usage(responses_usage(resp))
            resp["control"] = await reporter.final(resolved, output_tokens(resp))
            if reason := finish_reason(resp["control"]):
                mark_incomplete(resp, reason)
                kind = data["type"] = INCOMPLETE
            yield f"event: {kind}\ndata: {json.dumps(data)}\n\n"
    finally:
        release()
        aclose = getattr(events, "aclose", None)
        if aclose is not None:
            await aclose()


def responses_usage(resp: dict[str, Any]) -> dict[str, int] | None:
    """The Responses usage in chat's names (for the token counters)."""
    u = resp.get("usage")
    if not u:
        return None
    return {"prompt_tokens": u.get("input_tokens") or 0,
            "completion_tokens": u.get("output_tokens") or 0}
