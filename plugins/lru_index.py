"""A fixed pool of table indices handed out by key, least recently used first to go.

An index whose key a live request holds is pinned and never evicted; taking one from a
pool of pinned indices is an error (`TableFull`)."""

from __future__ import annotations

from collections import OrderedDict


class TableFull(RuntimeError):
    pass


class LruIndex:
    def __init__(self, indices: range, what: str) -> None:
        self.size = len(indices)
        self.what = what  # e.g. "steering slots", for the error message
        self._lru: OrderedDict[str, int] = OrderedDict()
        self._free = list(reversed(indices))

    def lookup(self, key: str) -> int | None:
        index = self._lru.get(key)
        if index is not None:
            self._lru.move_to_end(key)
        return index

    def take(self, key: str, pinned: set[str]) -> int:
        """A free index for `key`, evicting the oldest unpinned key if none is free."""
        if self._free:
            index = self._free.pop()
        else:
            old = next((k for k in self._lru if k not in pinned), None)
            if old is None:
                raise TableFull(f"all {self.size} {self.what} are held by running requests")
            index = self._lru.pop(old)
        self._lru[key] = index
        return index

    def in_use(self, pinned: set[str]) -> int:
        return sum(1 for k in self._lru if k in pinned)
