"""Worker → server side channel for per-request results and runtime statistics.

vLLM's engine outputs have no free-form per-step field, so the worker PUSHes small
msgpack messages over ZeroMQ to the address in `$VSTEER_CHANNEL`; the server (or an
offline tool) PULLs them. Sends never block the forward pass: when the receiver
lags, messages are dropped and counted.
"""

from __future__ import annotations

import os
from typing import Any

import msgspec

ENV_ADDRESS = "VSTEER_CHANNEL"
_encode = msgspec.msgpack.Encoder().encode


class WorkerChannel:
    def __init__(self, address: str | None = None) -> None:
        self.address = address or os.environ.get(ENV_ADDRESS)
        self.dropped = 0
        self._sock = None
        if self.address:
            import zmq

            self._zmq = zmq
            self._sock = zmq.Context.instance().socket(zmq.PUSH)
            self._sock.setsockopt(zmq.SNDHWM, 10000)
            self._sock.setsockopt(zmq.LINGER, 1000)
            self._sock.connect(self.address)

    def send(self, message: dict[str, Any]) -> None:
        if self._sock is None:
            return
        try:
            self._sock.send(_encode(message), self._zmq.NOBLOCK)
        except self._zmq.Again:
            self.dropped += 1
