"""A stream whose client left before its first chunk still releases what its request
held (slot admission, the engine request): the generator never ran, so only the
response's own cleanup can."""

from __future__ import annotations

import asyncio

import pytest
from starlette.responses import StreamingResponse

from vsteer.server.closing_stream import ClosingStreamingResponse


def _content(started: list[bool]):
    async def gen():
        started.append(True)
        try:
            yield "data: 1\n\n"
        finally:
            started.append(False)

    return gen()


async def _gone_before_the_head(message):  # ASGI 2.4 server: the send raises
    raise OSError("client went away")


async def _disconnected():
    return {"type": "http.disconnect"}


SCOPE_24 = {"type": "http", "asgi": {"spec_version": "2.4"}}


@pytest.mark.parametrize("cls, leaks", [(StreamingResponse, True),
                                        (ClosingStreamingResponse, False)])
def test_cleanup_runs_when_the_client_left_before_the_first_chunk(cls, leaks):
    released, started = [], []

    async def cleanup():
        released.append(True)

    kwargs = {"cleanup": cleanup} if cls is ClosingStreamingResponse else {}
    resp = cls(_content(started), media_type="text/event-stream", **kwargs)
    with pytest.raises(Exception):  # noqa: B017 (Starlette's ClientDisconnect)
        asyncio.run(resp(SCOPE_24, _disconnected, _gone_before_the_head))
    assert started == []  # the generator never ran, so its finally never could
    assert (released == []) == leaks  # the plain response leaks, ours releases


def test_cleanup_runs_once_after_a_normal_stream():
    released, started, sent = [], [], []

    async def cleanup():
        released.append(True)

    async def send(message):
        sent.append(message)

    async def receive():
        await asyncio.sleep(10)
        return {"type": "http.disconnect"}

    resp = ClosingStreamingResponse(_content(started), cleanup, media_type="text/event-stream")
    asyncio.run(resp(SCOPE_24, receive, send))
    assert started == [True, False] and released == [True]
    assert sent[1]["body"] == b"data: 1\n\n"
