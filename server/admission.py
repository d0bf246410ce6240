"""Slot admission: a request starts only when its steering slots fit.

The worker has `capacity` device slots. Requests in flight may together use at most
that many distinct slot keys; a request that would exceed it waits (FIFO) until
others finish. It never gets someone else's vector, and the worker never runs out.
"""

from __future__ import annotations

import asyncio
from collections import Counter, deque

from vsteer.server.errors import APIError


class SlotAdmission:
    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._refs: Counter[str] = Counter()
        self._waiters: deque[tuple[frozenset[str], asyncio.Future[None]]] = deque()

    @property
    def in_use(self) -> int:
        return len(self._refs)

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    def _fits(self, keys: frozenset[str]) -> bool:
        return len(self._refs.keys() | keys) <= self.capacity

    async def acquire(self, keys: set[str]) -> None:
        fk = frozenset(keys)
        if not fk:
            return
        if len(fk) > self.capacity:
            raise APIError(400, f"request needs {len(fk)} steering slots; the server has "
                           f"{self.capacity}", param="control.steer", code="too_many_slots")
        if not self._waiters and self._fits(fk):
            self._refs.update(fk)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((fk, fut))
        try:
            await fut
        except BaseException:
            if fut.done() and not fut.cancelled():
                self.release(fk)  # admitted just as we were cancelled
            else:
                self._waiters = deque(w for w in self._waiters if w[1] is not fut)
            raise

    def release(self, keys: set[str] | frozenset[str]) -> None:
        if not keys:
            return
        self._refs.subtract(keys)
        for k in [k for k, n in self._refs.items() if n <= 0]:
            del self._refs[k]
        while self._waiters and self._fits(self._waiters[0][0]):
            fk, fut = self._waiters.popleft()
            if not fut.done():
                self._refs.update(fk)
                fut.set_result(None)
