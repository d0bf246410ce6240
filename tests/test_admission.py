"""Slot admission: requests wait (FIFO) for free slots, never exceed capacity."""

import asyncio

import pytest

from vsteer.server.admission import SlotAdmission
from vsteer.server.errors import APIError


def run(coro):
    return asyncio.run(coro)


def test_shared_keys_count_once():
    async def main():
        a = SlotAdmission(2)
        await a.acquire({"x", "y"})
        await asyncio.wait_for(a.acquire({"x"}), 0.1)
        assert a.in_use == 2
    run(main())


def test_waits_until_release_then_admits_fifo():
    async def main():
        a = SlotAdmission(2)
        await a.acquire({"x", "y"})
        order = []

        async def want(keys, tag):
            await a.acquire(keys)
            order.append(tag)

        t1 = asyncio.create_task(want({"z"}, "first"))
        t2 = asyncio.create_task(want({"w"}, "second"))
        await asyncio.sleep(0.05)
        assert order == [] and a.waiting == 2 and a.in_use == 2
        a.release({"x"})
        await asyncio.sleep(0.05)
        assert order == ["first"] and a.in_use == 2
        a.release({"y"})
        await asyncio.gather(t1, t2)
        assert order == ["first", "second"]
    run(main())


def test_cancelled_waiter_leaves_no_trace():
    async def main():
        a = SlotAdmission(1)
        await a.acquire({"x"})
        t = asyncio.create_task(a.acquire({"y"}))
        await asyncio.sleep(0.01)
        t.cancel()
        with pytest.raises(asyncio.CancelledError):
            await t
        a.release({"x"})
        assert a.in_use == 0 and a.waiting == 0
    run(main())


def test_more_keys_than_capacity_is_a_400():
    async def main():
        with pytest.raises(APIError) as e:
            await SlotAdmission(1).acquire({"a", "b"})
        assert e.value.status == 400
    run(main())
