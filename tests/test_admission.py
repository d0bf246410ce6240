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


def test_private_slots_do_not_take_shared_capacity():
    """A decision on every request (a refusal guard by policy) holds one private slot
    each: with one shared slot (the guard's direction) and two private ones, two such
    requests run at once (before, private keys counted against the shared capacity and
    the second waited)."""
    async def main():
        a = SlotAdmission(1, private_capacity=2)
        await asyncio.wait_for(a.acquire({"dir", "private:r1:refusal:0"}), 0.1)
        await asyncio.wait_for(a.acquire({"dir", "private:r2:refusal:0"}), 0.1)
        assert (a.in_use, a.private_in_use, a.waiting) == (1, 2, 0)
    run(main())


def test_private_slots_wait_for_their_own_pool():
    async def main():
        a = SlotAdmission(4, private_capacity=1)
        await a.acquire({"private:r1:refusal:0"})
        t = asyncio.create_task(a.acquire({"private:r2:refusal:0"}))
        await asyncio.sleep(0.05)
        assert a.waiting == 1 and not t.done()
        a.release({"private:r1:refusal:0"})
        await asyncio.wait_for(t, 0.5)
        assert (a.in_use, a.private_in_use, a.waiting) == (0, 1, 0)
        a.release({"private:r2:refusal:0"})
        assert a.private_in_use == 0
    run(main())


def test_more_private_keys_than_the_pool_is_a_400():
    async def main():
        with pytest.raises(APIError) as e:
            await SlotAdmission(4, private_capacity=1).acquire(
                {"private:r:refusal:0", "private:r:refusal:1"})
        assert e.value.status == 400 and e.value.code == "too_many_slots"
    run(main())
