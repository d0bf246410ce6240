"""Graceful shutdown: on SIGTERM, finish what is in flight and refuse what is new.

The first SIGTERM (or Ctrl-C) starts a drain: `/health` turns 503 (Kubernetes takes the
pod out of its Service), new API requests get 503 `server_shutting_down` with
Retry-After, and requests already in flight (streams included) run to the end. When the
last one ends, or after `--drain-timeout` seconds, uvicorn's own shutdown runs
(connections closed, engine stopped). A second signal skips the wait.
"""

from __future__ import annotations

import json
import logging
import signal
import threading
import time
from types import FrameType
from typing import Any

import uvicorn

from vsteer.server import metrics

GATED_PREFIX = "/v1/"  # API routes; /health and /metrics stay answerable while draining
RETRY_AFTER_S = 5
log = logging.getLogger("vsteer.server")


class Drain:
    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self.draining = False
        self._inflight = 0
        self._idle = threading.Condition()

    @property
    def inflight(self) -> int:
        return self._inflight

    def begin(self) -> None:
        self.draining = True
        metrics.DRAINING.set(1)

    def enter(self) -> None:
        with self._idle:
            self._inflight += 1

    def leave(self) -> None:
        with self._idle:
            self._inflight -= 1
            if self._inflight == 0:
                self._idle.notify_all()

    def wait_idle(self) -> bool:
        """Block until nothing is in flight or the timeout passes; True if idle."""
        deadline = time.monotonic() + self.timeout_s
        with self._idle:
            while self._inflight > 0:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._idle.wait(left)
        return True


class DrainGate:
    """ASGI middleware: counts API requests in flight; refuses new ones while draining."""

    def __init__(self, app: Any, drain: Drain) -> None:
        self.app = app
        self.drain = drain

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(GATED_PREFIX):
            await self.app(scope, receive, send)
            return
        if self.drain.draining:
            await _refuse(send)
            return
        self.drain.enter()
        try:
            await self.app(scope, receive, send)
        finally:
            self.drain.leave()


async def _refuse(send: Any) -> None:
    body = json.dumps({"error": {"message": "the server is shutting down; retry on another "
                                 "replica", "type": "service_unavailable", "param": None,
                                 "code": "server_shutting_down"}}).encode()
    await send({"type": "http.response.start", "status": 503,
                "headers": [(b"content-type", b"application/json"),
                            (b"retry-after", str(RETRY_AFTER_S).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


class DrainingServer(uvicorn.Server):
    """uvicorn's server with a drain before its shutdown."""

    def __init__(self, config: uvicorn.Config, drain: Drain) -> None:
        super().__init__(config)
        self.drain = drain

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.drain.draining or sig not in (signal.SIGTERM, signal.SIGINT):
            super().handle_exit(sig, frame)  # a second signal: stop waiting
            return
        self.drain.begin()
        threading.Thread(target=self._exit_when_idle, args=(sig, frame), daemon=True,
                         name="vsteer-drain").start()

    def _exit_when_idle(self, sig: int, frame: FrameType | None) -> None:
        idle = self.drain.wait_idle()
        if not idle:
            log.warning(
                "drain timed out after %.0f s with %d requests in flight",
                self.drain.timeout_s, self.drain.inflight)
        super().handle_exit(sig, frame)
