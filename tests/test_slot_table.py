"""Slot table: zero slot, LRU reuse, pinning, exhaustion, failed loads."""

import numpy as np
import pytest
import torch

from vsteer.plugins.lru_index import TableFull
from vsteer.plugins.slot_table import SlotTable


def loader(value, layers=(0, 1)):
    return lambda: {la: np.full(4, value, np.float32) for la in layers}


def table(n=2):
    return SlotTable(n, num_layers=3, hidden_size=4, dtype=torch.float32,
                     device=torch.device("cpu"))


def test_slot_zero_is_never_assigned_and_stays_zero():
    t = table(2)
    slots = {t.acquire(k, loader(1.0), set()) for k in ("a", "b")}
    assert 0 not in slots
    assert torch.count_nonzero(t.vectors[0]) == 0


def test_loaded_rows_and_inverse_norms():
    t = table()
    s = t.acquire("a", loader(2.0, layers=(1,)), set())
    assert torch.equal(t.vectors[s, 1], torch.full((4,), 2.0))
    assert t.inv_norms[s, 1].item() == pytest.approx(1 / 4.0)
    assert t.inv_norms[s, 0].item() == 0.0  # no direction at layer 0


def test_same_key_reuses_slot_without_loading_again():
    t = table()
    s = t.acquire("a", loader(1.0), set())
    assert t.acquire("a", lambda: pytest.fail("reloaded"), set()) == s


def test_lru_evicts_oldest_unpinned_and_clears_it():
    t = table(2)
    sa = t.acquire("a", loader(1.0), set())
    t.acquire("b", loader(2.0, layers=(0, 1, 2)), set())
    sc = t.acquire("c", loader(3.0, layers=(0,)), pinned={"b"})
    assert sc == sa  # "a" was the only unpinned key
    assert t.index.lookup("a") is None
    assert torch.count_nonzero(t.vectors[sc, 1]) == 0  # old content gone


def test_all_pinned_is_an_error_never_a_shared_slot():
    t = table(2)
    t.acquire("a", loader(1.0), set())
    t.acquire("b", loader(2.0), set())
    with pytest.raises(TableFull):
        t.acquire("c", loader(3.0), pinned={"a", "b"})
    assert t.in_use({"a", "b"}) == 2


def test_failed_load_leaves_the_table_untouched():
    t = table(1)
    s = t.acquire("a", loader(1.0), set())

    def boom():
        raise OSError("gone")

    with pytest.raises(OSError):
        t.acquire("b", boom, set())
    assert t.index.lookup("a") == s and torch.equal(t.vectors[s, 0], torch.ones(4))
