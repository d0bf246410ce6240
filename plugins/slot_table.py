"""Fixed device slots holding loaded steering vectors, with an LRU key → slot map.

Slot 0 is all zeros and never assigned: an entry pointing at it is a no-op. A slot
used by a live request is pinned and never evicted; loading into a full table of
pinned slots is an error (the server's admission control makes requests wait
before that can happen).

Two pools share the one tensor, each with its own LRU index:
    shared   rows 1..S         vectors by artifact key, shared by every request naming it
    private  rows S+1..S+P     one engine request's own (a decision's force, zero until it
                               fires; keys start with PRIVATE_KEY_PREFIX)
so that a control holding a private slot per request (a refusal guard on every request)
never takes the shared slots distinct steering vectors need, and is limited by P (by
default one per sequence the engine runs), not by S.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from vsteer.plugins.lru_index import LruIndex

PRIVATE_KEY_PREFIX = "private:"  # the key of a private slot (the server counts these apart)


def is_private(key: str) -> bool:
    return key.startswith(PRIVATE_KEY_PREFIX)


class SlotTable:
    def __init__(self, num_slots: int, num_layers: int, hidden_size: int,
                 dtype: torch.dtype, device: torch.device, num_private: int = 0) -> None:
        self.num_slots = num_slots
        self.num_private = num_private
        rows = 1 + num_slots + num_private
        self.vectors = torch.zeros(rows, num_layers, hidden_size, dtype=dtype,
                                   device=device)  # [1+S+P, L, H]
        self.inv_norms = torch.zeros(rows, num_layers, dtype=torch.float32,
                                     device=device)  # [1+S+P, L]; 0 = no direction there
        self.index = LruIndex(range(1, num_slots + 1), "steering slots")
        self.private_index = LruIndex(range(num_slots + 1, rows), "private slots")

    def acquire(self, key: str, load: Callable[[], dict[int, np.ndarray]],
                pinned: set[str]) -> int:
        """The slot holding `key` (from the private pool when `is_private(key)`)."""
        index = self.private_index if is_private(key) else self.index
        slot = index.lookup(key)
        if slot is not None:
            return slot
        directions = load()  # before evicting: a failed load leaves the table intact
        slot = index.take(key, pinned)
        self.vectors[slot].zero_()
        self.inv_norms[slot].zero_()
        for layer, d in directions.items():
            row = self.vectors[slot, layer]
            row.copy_(torch.from_numpy(np.ascontiguousarray(d, np.float32)))
            norm = float(row.float().norm())  # of the stored (rounded) vector
            self.inv_norms[slot, layer] = 1.0 / norm if norm > 0 else 0.0
        return slot

    def in_use(self, pinned: set[str]) -> int:
        """Shared slots held by live requests."""
        return self.index.in_use(pinned)

    def private_in_use(self, pinned: set[str]) -> int:
        return self.private_index.in_use(pinned)
