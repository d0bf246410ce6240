"""Request bodies read with a size limit: a declared Content-Length over the limit is
refused before anything is read, and a body streamed past it is cut off (413) without
ever being held whole in memory."""

from __future__ import annotations

import json
from typing import Any

from fastapi import Request

from vsteer.server.errors import APIError

MAX_BODY_BYTES = 4 * 1024 * 1024  # JSON API bodies


async def read_body(raw: Request, limit: int) -> bytes:
    too_big = APIError(413, f"request body is larger than {limit} bytes", code="body_too_large")
    declared = raw.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_big
    chunks: list[bytes] = []
    size = 0
    async for chunk in raw.stream():
        size += len(chunk)
        if size > limit:
            raise too_big
        chunks.append(chunk)
    return b"".join(chunks)


async def read_json_object(raw: Request, limit: int = MAX_BODY_BYTES) -> dict[str, Any]:
    body = await read_body(raw, limit)
    try:
        data = json.loads(body)
    except ValueError as e:
        raise APIError(400, f"request body is not valid JSON: {e}",
                       code="invalid_json") from None
    if not isinstance(data, dict):
        raise APIError(400, "request body must be a JSON object", code="invalid_json")
    return data
