"""A streaming response that always runs its cleanup.

A generator's `finally` runs only once the generator has started. A client that leaves
before the first chunk (the send of the response head fails, or the disconnect arrives
first) leaves Starlette's StreamingResponse without ever iterating it, and without
running a BackgroundTask either when the send raised: whatever the request held (its
steering-slot admission, its engine request) would stay held for good. This response
runs `cleanup` after the ASGI call however it ended."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send


class ClosingStreamingResponse(StreamingResponse):
    def __init__(self, content: Any, cleanup: Callable[[], Awaitable[None]],
                 **kwargs: Any) -> None:
        super().__init__(content, **kwargs)
        self._cleanup = cleanup

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self._cleanup()
