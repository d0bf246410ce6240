"""The worker -> server results channel: an IPC socket beside the server, a TCP address
advertised with this node's IP when workers may run on other nodes (vLLM's Ray executor,
multi-node), and messages without the listener's key dropped."""

from __future__ import annotations

import os
import time
from types import SimpleNamespace

from vsteer.plugins.channel import (
    ENV_ADDRESS,
    ENV_KEY,
    ChannelListener,
    WorkerChannel,
    new_channel_address,
)
from vsteer.server.app import workers_may_be_remote


def _wait(cond, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "no message arrived"
        time.sleep(0.02)


def test_tcp_channel_advertises_a_reachable_address_and_checks_the_key():
    listener = ChannelListener(new_channel_address(remote=True), advertise_host="127.0.0.1")
    try:
        assert listener.address.startswith("tcp://127.0.0.1:")
        env: dict[str, str] = {}
        listener.export(env)
        assert env == {ENV_ADDRESS: listener.address, ENV_KEY: listener.key}
        worker = WorkerChannel(env[ENV_ADDRESS], env[ENV_KEY])
        worker.send(_step("r1", "m"))
        _wait(lambda: listener.book.trace("r1") is not None)
        intruder = WorkerChannel(listener.address, key="not-the-key")
        intruder.send(_step("r2", "forged"))
        keyless = WorkerChannel(listener.address, key="")
        keyless.send(_step("r3", "forged"))
        _wait(lambda: listener.rejected == 2)
        assert listener.pop_errors("r1") == ["m"]
        assert listener.book.trace("r2") is None and listener.book.trace("r3") is None
    finally:
        listener.close()


def _step(rid: str, message: str) -> dict:
    return {"type": "step", "step": 1, "requests": {f"{rid}:0": {
        "sampled": 0, "errors": [{"code": "control_not_applied", "message": message}]}}}


def test_tcp_channel_defaults_to_vllms_node_ip(monkeypatch):
    monkeypatch.setenv("VLLM_HOST_IP", "127.0.0.7")  # what vLLM's get_ip() honours first
    listener = ChannelListener(new_channel_address(remote=True))
    try:
        assert listener.address.startswith("tcp://127.0.0.7:")
    finally:
        listener.close()


def test_ipc_channel_beside_the_server():
    listener = ChannelListener(new_channel_address())
    try:
        assert listener.address.startswith("ipc://")
        WorkerChannel(listener.address, listener.key).send({"type": "hello", "rank": 0})
        _wait(lambda: 0 in listener.hello)
    finally:
        listener.close()
    assert not os.path.exists(listener.address[len("ipc://"):])


def test_remote_workers_get_a_tcp_channel():
    assert workers_may_be_remote(SimpleNamespace(distributed_executor_backend="ray", nnodes=1))
    assert workers_may_be_remote(SimpleNamespace(distributed_executor_backend="mp", nnodes=2))
    assert not workers_may_be_remote(SimpleNamespace(distributed_executor_backend=None,
                                                     nnodes=1))
