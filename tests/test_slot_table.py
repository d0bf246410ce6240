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


def test_private_keys_come_from_their_own_pool():
    """Private slots (rows S+1..S+P) never take a shared slot, and a full private pool
    leaves the shared one usable."""
    t = SlotTable(1, num_layers=3, hidden_size=4, dtype=torch.float32,
                  device=torch.device("cpu"), num_private=2)
    assert t.vectors.shape[0] == 1 + 1 + 2
    shared = t.acquire("dir", loader(1.0), set())
    p1 = t.acquire("private:a:0:refusal", dict, {"dir"})
    p2 = t.acquire("private:b:0:refusal", dict, {"dir", "private:a:0:refusal"})
    assert shared == 1 and {p1, p2} == {2, 3}
    assert torch.count_nonzero(t.vectors[p1]) == 0
    with pytest.raises(TableFull):
        t.acquire("private:c:0:refusal", dict, {"dir", "private:a:0:refusal",
                                                "private:b:0:refusal"})
    assert t.index.lookup("dir") == shared  # the shared slot was not touched
    assert t.in_use({"dir"}) == 1 and t.private_in_use({"private:a:0:refusal"}) == 1
