"""A second replica on the same artifact directory as the session server: artifacts
written through one are served by the other without a restart; per-key rate limits;
and, last, SIGTERM: requests in flight finish, new ones get 503, the process exits."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time

import httpx
import numpy as np
import pytest
import yaml

from chat_api import post
from conftest import ADMIN_KEY, API_KEY, MODEL_NAME, POLICY, start_server

pytestmark = pytest.mark.engine
LIMITED_KEY = "tenant-limited-key"
DRAIN_S = 20


@pytest.fixture(scope="module")
def replica(server, model_dir, artifacts, tmp_path_factory):
    """Replica 2: same artifacts; untenanted keys get 0.2 req/s (burst 2); tenant
    "limited" gets its own 0.2 req/s, burst 4. The admin key is never limited."""
    tmp = tmp_path_factory.mktemp("replica")
    policy = {"tenants": {**POLICY["tenants"], "limited": {
        "keys": [LIMITED_KEY], "rate_limit": {"rps": 0.2, "burst": 4}}}}
    (tmp / "policy.yaml").write_text(yaml.safe_dump(policy))
    srv = start_server(model_dir, artifacts, tmp, "--policy", str(tmp / "policy.yaml"),
                       "--rate-limit", "0.2:2", "--drain-timeout", str(DRAIN_S))
    yield srv
    srv.stop()


def _h(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _steered(srv, name: str, scale: float) -> httpx.Response:
    body = {"max_tokens": 8, "messages": [{"role": "user", "content": "Describe your home."}],
            "control": {"steer": [{"vector": name, "scale": scale}]}}
    return post(srv, body, ADMIN_KEY)


def test_artifact_written_on_one_replica_is_served_by_the_other(server, replica):
    dirs = {"7": (np.random.default_rng(7).standard_normal(576) * 2.0).tolist()}
    up = httpx.post(replica.base_url + "/v1/control/vectors?overwrite=true", headers=_h(
        ADMIN_KEY), json={"name": "from-replica", "directions": dirs})
    assert up.status_code == 201, up.text
    listed = httpx.get(server.base_url + "/v1/control/vectors/from-replica",
                       headers=_h(ADMIN_KEY)).json()
    assert listed["sha256"] == up.json()["sha256"]
    steered = _steered(server, "from-replica", 2.0)
    plain = _steered(server, "from-replica", 0.0)
    assert steered.status_code == plain.status_code == 200
    assert steered.json()["choices"][0]["message"]["content"] != \
        plain.json()["choices"][0]["message"]["content"]
    # ... and the same request on the replica steers the same way (same store, same math)
    assert _steered(replica, "from-replica", 2.0).json()["choices"][0]["message"] == \
        steered.json()["choices"][0]["message"]
    gone = httpx.delete(server.base_url + "/v1/control/vectors/from-replica",
                        headers=_h(ADMIN_KEY))
    assert gone.status_code == 200
    r = _steered(replica, "from-replica", 2.0)
    assert r.status_code == 400 and "from-replica" in r.json()["error"]["message"]


def _models(srv, key: str) -> httpx.Response:
    return httpx.get(srv.base_url + "/v1/models", headers=_h(key))


def test_per_key_rate_limits(replica):
    plain = [_models(replica, API_KEY).status_code for _ in range(3)]
    assert plain == [200, 200, 429]  # --rate-limit 0.2:2
    tenant = [_models(replica, LIMITED_KEY).status_code for _ in range(5)]
    assert tenant == [200, 200, 200, 200, 429]  # the tenant's own burst of 4
    refused = _models(replica, LIMITED_KEY)
    err = refused.json()["error"]
    assert refused.status_code == 429 and err["code"] == "rate_limit_exceeded"
    assert err["type"] == "rate_limit_error" and 1 <= int(refused.headers["retry-after"]) <= 5
    assert all(_models(replica, ADMIN_KEY).status_code == 200 for _ in range(5))  # operator
    assert replica.metric('vsteer_rate_limited_requests_total{tenant="limited"}') >= 2
    time.sleep(5.5)  # 0.2 req/s: one request's worth refills
    assert _models(replica, API_KEY).status_code == 200


async def _stream(srv, max_tokens: int, started: asyncio.Event) -> dict:
    body = {"model": MODEL_NAME, "stream": True, "max_tokens": max_tokens, "temperature": 0,
            "ignore_eos": True, "messages": [{"role": "user", "content": "Count slowly."}],
            "control": {"steer": [{"vector": "joyful", "scale": 0.5}]}}
    chunks, done = 0, False
    async with httpx.AsyncClient(timeout=300) as client:
        async with client.stream("POST", srv.base_url + "/v1/chat/completions", json=body,
                                 headers=_h(ADMIN_KEY)) as r:
            assert r.status_code == 200
            async for line in r.aiter_lines():
                if line == "data: [DONE]":
                    done = True
                elif line.startswith("data: "):
                    choices = json.loads(line[6:]).get("choices") or [{}]
                    if (choices[0].get("delta") or {}).get("content"):
                        chunks += 1
                        started.set()
    return {"chunks": chunks, "done": done}


def test_sigterm_drains_in_flight_and_refuses_new(replica):
    """Must run last in this module: it stops the replica."""
    async def run():
        started = asyncio.Event()
        inflight = asyncio.create_task(_stream(replica, 96, started))
        await asyncio.wait_for(started.wait(), 120)
        os.kill(replica.proc.pid, signal.SIGTERM)
        async with httpx.AsyncClient(timeout=30) as client:
            for _ in range(50):  # the signal lands within a tick
                new = await client.get(replica.base_url + "/v1/models", headers=_h(ADMIN_KEY))
                if new.status_code == 503:
                    break
                await asyncio.sleep(0.1)
            health = await client.get(replica.base_url + "/health")
        return new, health, await inflight

    t0 = time.monotonic()
    new, health, inflight = asyncio.run(run())
    assert new.status_code == 503 and new.json()["error"]["code"] == "server_shutting_down"
    assert new.headers["retry-after"] == "5"
    assert health.status_code == 503
    assert inflight == {"chunks": 96, "done": True}  # the stream in flight ran to its end
    replica.proc.wait(DRAIN_S + 60)  # bounded: drain, then uvicorn's close and the engine
    assert time.monotonic() - t0 < DRAIN_S + 60
    with pytest.raises(httpx.ConnectError):
        httpx.get(replica.base_url + "/health")
