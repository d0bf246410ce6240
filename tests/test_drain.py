"""The drain gate: requests in flight finish, new API requests get 503, /health and
/metrics stay reachable; wait_idle is bounded."""

from __future__ import annotations

import asyncio
import threading

import httpx
from fastapi import FastAPI

from vsteer.server.drain import Drain, DrainGate


def _app(drain: Drain, release: asyncio.Event) -> FastAPI:
    app = FastAPI()
    app.add_middleware(DrainGate, drain=drain)

    @app.get("/v1/slow")
    async def slow():
        await release.wait()
        return {"ok": True}

    @app.get("/metrics")
    async def metrics():
        return {"up": 1}

    return app


def test_in_flight_finishes_new_refused_health_open():
    async def run():
        drain, release = Drain(timeout_s=5.0), asyncio.Event()
        transport = httpx.ASGITransport(app=_app(drain, release))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            inflight = asyncio.create_task(client.get("/v1/slow"))
            while drain.inflight == 0:
                await asyncio.sleep(0.01)
            drain.begin()
            refused = await client.get("/v1/slow")
            metrics = await client.get("/metrics")
            idle = asyncio.create_task(asyncio.to_thread(drain.wait_idle))
            await asyncio.sleep(0.05)
            assert not idle.done()  # still waiting for the request in flight
            release.set()
            done = await inflight
            return refused, metrics, done, await idle, drain.inflight

    refused, metrics, done, idle, left = asyncio.run(run())
    assert refused.status_code == 503
    assert refused.json()["error"]["code"] == "server_shutting_down"
    assert refused.headers["retry-after"] == "5"
    assert metrics.status_code == 200
    assert done.status_code == 200 and done.json() == {"ok": True}
    assert idle is True and left == 0


def test_wait_idle_gives_up_after_the_timeout():
    drain = Drain(timeout_s=0.2)
    drain.enter()
    result: list[bool] = []
    t = threading.Thread(target=lambda: result.append(drain.wait_idle()))
    t.start()
    t.join(5)
    assert result == [False]
    drain.leave()
    assert drain.wait_idle() is True
