"""Worker → server side channel (both ends) for per-request results and runtime statistics.

vLLM's engine outputs have no free-form per-step field, so the worker PUSHes small
msgpack messages over ZeroMQ to the address in `$VSTEER_CHANNEL`; the server (or an
offline tool) PULLs them. Sends never block the forward pass: when the receiver
lags, messages are dropped and counted.

Workers beside the server use an IPC socket. Workers on other nodes (vLLM's Ray
executor, multi-node) reach a TCP address: the listener binds a free port on every
interface and advertises this node's IP (vLLM copies the driver's environment,
`$VSTEER_CHANNEL` included, into its Ray workers). Each message carries the per-server
key in `$VSTEER_CHANNEL_KEY`; the listener drops (and counts) any other.
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
import uuid
from typing import Any

import msgspec

from vsteer.plugins.result_book import Expect, ResultBook
from vsteer.plugins.step_report import STEP

ENV_ADDRESS = "VSTEER_CHANNEL"
ENV_KEY = "VSTEER_CHANNEL_KEY"
_encode = msgspec.msgpack.Encoder().encode


class WorkerChannel:
    def __init__(self, address: str | None = None, key: str | None = None) -> None:
        self.address = address or os.environ.get(ENV_ADDRESS)
        self.key = key if key is not None else os.environ.get(ENV_KEY, "")
        self.dropped = 0
        self._sock = None
        self._lock = threading.Lock()  # the runtime and its result reader both send
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
        data = _encode({**message, "key": self.key} if self.key else message)
        with self._lock:
            try:
                self._sock.send(data, self._zmq.NOBLOCK)
            except self._zmq.Again:
                self.dropped += 1



def new_channel_address(remote: bool = False) -> str:
    """Where the listener binds: an IPC socket, or (`remote`: workers may run on other
    nodes) a free TCP port on every interface."""
    if remote:
        return "tcp://0.0.0.0:*"
    return f"ipc://{tempfile.gettempdir()}/vsteer-{os.getpid()}-{uuid.uuid4().hex[:8]}.sock"


def node_ip() -> str:
    """This node's address as other nodes see it (vLLM's own choice: $VLLM_HOST_IP, else
    the interface of the default route)."""
    from vllm.utils.network_utils import get_ip

    return get_ip()


class ChannelListener:
    """PULLs worker messages on a background thread and keeps what the server needs."""

    def __init__(self, address: str, max_requests: int = 10000,
                 advertise_host: str | None = None) -> None:
        """`address`: where to bind (new_channel_address). `self.address` is what workers
        connect to; `self.key` what their messages must carry (export both to them)."""
        import secrets

        import zmq

        self._sock = zmq.Context.instance().socket(zmq.PULL)
        self._sock.setsockopt(zmq.RCVTIMEO, 200)
        self._sock.bind(address)
        self.address = self._advertised(address, advertise_host)
        self.key = secrets.token_hex(16)
        self.rejected = 0  # messages without this listener's key
        self._decode = msgspec.msgpack.Decoder().decode
        self.stats: dict[int, dict[str, Any]] = {}  # rank -> latest stats
        self.hello: dict[int, dict[str, Any]] = {}
        self.captures: dict[str, dict[str, Any]] = {}
        self.book = ResultBook(max_requests)  # per-request results, from step messages
        self._ready = threading.Event()
        self._stop = threading.Event()
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="vsteer-results", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import zmq

        while not self._stop.is_set():
            try:
                msg = self._decode(self._sock.recv())
            except zmq.Again:
                continue
            except zmq.ZMQError:
                break
            self._handle(msg)

    def _advertised(self, address: str, host: str | None) -> str:
        if not address.startswith("tcp://"):
            return address
        import zmq

        bound = self._sock.getsockopt(zmq.LAST_ENDPOINT).decode()  # tcp://0.0.0.0:PORT
        port = bound.rsplit(":", 1)[1]
        return f"tcp://{host or node_ip()}:{port}"

    def export(self, environ: dict[str, str] | None = None) -> None:
        """Tell engine processes started from here where to report (they inherit it)."""
        env = os.environ if environ is None else environ
        env[ENV_ADDRESS] = self.address
        env[ENV_KEY] = self.key

    def _handle(self, msg: dict[str, Any]) -> None:
        if msg.pop("key", None) != self.key:
            self.rejected += 1
            return
        kind = msg.get("type")
        if kind == STEP:
            self.book.add_step(msg)  # the book wakes its own waiters
            return
        with self._cond:
            if kind == "stats":
                self.stats[int(msg.get("rank", 0))] = msg
            elif kind == "hello":
                self.hello[int(msg.get("rank", 0))] = msg
                self._ready.set()
            elif kind == "capture":
                self.captures[msg["rid"]] = msg
            self._cond.notify_all()

    def wait_ready(self, timeout: float) -> dict[str, Any]:
        if not self._ready.wait(timeout):
            raise RuntimeError(
                "the vsteer runtime did not report from the vLLM worker: the plugin did "
                "not load there (see the engine log for 'Failed to load plugin')"
            )
        return self.hello[min(self.hello)]

    # Blocking reads for offline tools (the server awaits the book directly). Each
    # returns as soon as the step message it needs has landed; `timeout` only bounds a
    # worker that died.
    def pop_errors(self, rid: str) -> list[str]:
        """The error messages of `rid` so far (its first choice), removed."""
        res = self.book.peek(rid)
        out, res.errors = [e["message"] for e in res.errors], []
        return out

    def wait_token_results(self, rid: str, control: str, count: int, timeout: float
                           ) -> list[Any]:
        """A per-token installed control's results (Control.per_token) for `rid`'s first
        `count` tokens, removed (e.g. early exit's [exit layer, agreement] records)."""
        res = self.book.wait(rid, Expect(tokens=count), timeout)
        return res.extra.pop(control, [])[:count]

    def wait_captures(self, rids: list[str], timeout: float) -> dict[str, dict[str, Any]]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not all(r in self.captures for r in rids):
                left = deadline - time.monotonic()
                if left <= 0:
                    missing = [r for r in rids if r not in self.captures]
                    raise TimeoutError(f"no capture received for {len(missing)} request(s)")
                self._cond.wait(left)
            return {r: self.captures.pop(r) for r in rids}

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self._sock.close(linger=0)
        if self.address.startswith("ipc://"):
            try:
                os.unlink(self.address[len("ipc://"):])
            except FileNotFoundError:
                pass
