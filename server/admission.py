"""Slot admission: a request starts only when its steering slots fit.

The worker has `capacity` shared device slots and `private_capacity` private ones
(plugins/slot_table.py). Requests in flight may together use at most that many
distinct shared keys and private keys (`is_private`); a request that would exceed
either waits (FIFO) until others finish. It never gets someone else's vector, and the
worker never runs out.
"""

from __future__ import annotations

import asyncio
from collections import Counter, deque

from vsteer.plugins.slot_table import is_private
from vsteer.server.errors import APIError


class SlotAdmission:
    def __init__(self, capacity: int, private_capacity: int = 0) -> None:
        self.capacity = capacity
        self.private_capacity = private_capacity
        # requests in flight holding each key, one counter per pool
        self._shared: Counter[str] = Counter()
        self._private: Counter[str] = Counter()
        self._waiters: deque[tuple[frozenset[str], asyncio.Future[None]]] = deque()

    @property
    def in_use(self) -> int:
        """Shared slot keys held by requests in flight."""
        return len(self._shared)

    @property
    def private_in_use(self) -> int:
        return len(self._private)

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    def _fits(self, keys: frozenset[str]) -> bool:
        shared, private = _split(keys)
        return (len(self._shared.keys() | shared) <= self.capacity
                and len(self._private.keys() | private) <= self.private_capacity)

    def _take(self, keys: frozenset[str]) -> None:
        shared, private = _split(keys)
        self._shared.update(shared)
        self._private.update(private)

    async def acquire(self, keys: set[str]) -> None:
        fk = frozenset(keys)
        if not fk:
            return
        shared, private = _split(fk)
        if len(shared) > self.capacity:
            raise APIError(400, f"request needs {len(shared)} steering slots; the "
                           f"server has {self.capacity}", param="control.steer",
                           code="too_many_slots")
        if len(private) > self.private_capacity:
            raise APIError(400, f"request needs {len(private)} private slots (one per choice for "
                           "each decision that steers); the server has "
                           f"{self.private_capacity} (--max-private-slots)", param="control",
                           code="too_many_slots")
        if not self._waiters and self._fits(fk):
            self._take(fk)
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
        for pool in (self._shared, self._private):
            pool.subtract(k for k in keys if k in pool)
            for k in [k for k, n in pool.items() if n <= 0]:
                del pool[k]
        while self._waiters and self._fits(self._waiters[0][0]):
            fk, fut = self._waiters.popleft()
            if not fut.done():
                self._take(fk)
                fut.set_result(None)


def _split(keys: frozenset[str]) -> tuple[frozenset[str], frozenset[str]]:
    """(shared keys, private keys)."""
    private = frozenset(filter(is_private, keys))
    return keys - private, private
