"""Fixed device slots holding loaded steering vectors, with an LRU key → slot map.

Slot 0 is all zeros and never assigned: an entry pointing at it is a no-op. A slot
used by a live request is pinned and never evicted; loading into a full table of
pinned slots is an error (the server's admission control makes requests wait
before that can happen).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from vsteer.plugins.lru_index import LruIndex


class SlotTable:
    def __init__(self, num_slots: int, num_layers: int, hidden_size: int,
                 dtype: torch.dtype, device: torch.device) -> None:
        self.num_slots = num_slots
        self.vectors = torch.zeros(num_slots + 1, num_layers, hidden_size, dtype=dtype,
                                   device=device)  # [S+1, L, H]
        self.inv_norms = torch.zeros(num_slots + 1, num_layers, dtype=torch.float32,
                                     device=device)  # [S+1, L]; 0 = no direction there
        self.index = LruIndex(range(1, num_slots + 1), "steering slots")

    def acquire(self, key: str, load: Callable[[], dict[int, np.ndarray]],
                pinned: set[str]) -> int:
        slot = self.index.lookup(key)
        if slot is not None:
            return slot
        directions = load()  # before evicting: a failed load leaves the table intact
        slot = self.index.take(key, pinned)
        self.vectors[slot].zero_()
        self.inv_norms[slot].zero_()
        for layer, d in directions.items():
            row = self.vectors[slot, layer]
            row.copy_(torch.from_numpy(np.ascontiguousarray(d, np.float32)))
            norm = float(row.float().norm())  # of the stored (rounded) vector
            self.inv_norms[slot, layer] = 1.0 / norm if norm > 0 else 0.0
        return slot

    def in_use(self, pinned: set[str]) -> int:
        return self.index.in_use(pinned)
