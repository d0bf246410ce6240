"""Per-step token plan: prompt/generated split, idle reset."""

import torch

from vsteer.plugins.token_plan import TokenPlan


def plan():
    return TokenPlan(max_tokens=16, max_rows=8, k=2, device=torch.device("cpu"))


def test_rows_and_tokens():
    p = plan()
    p.begin(10)
    r0 = p.alloc_row([(3, 1.5, 0)])
    r1 = p.alloc_row([(1, -1.0, 1), (2, 0.5, 2)])
    p.assign(2, 5, r0)
    p.assign(5, 7, r1)
    p.commit(10)
    assert p.token_row.np[:10].tolist() == [-1, -1, 0, 0, 0, 1, 1, -1, -1, -1]
    assert p.row_slot.np[[r0, r1]].tolist() == [[3, 0], [1, 2]]
    assert p.row_scale.np[r1].tolist() == [-1.0, 0.5]
    assert int(p.step[0]) == 5


def test_reset_returns_every_token_to_untouched():
    p = plan()
    p.begin(8)
    p.assign(0, 8, p.alloc_row([(1, 1.0, 0)]))
    p.commit(8)
    p.reset()
    assert (p.token_row.np == -1).all() and int(p.step[0]) == 0


def test_a_reused_row_with_fewer_entries_clears_stale_ones():
    p = plan()
    r = p.alloc_row([(1, 1.0, 0), (2, 1.0, 0)])
    p.free_row(r)
    assert p.alloc_row([(5, 1.0, 0)]) == r
    assert p.row_slot.np[r].tolist() == [5, 0] and p.row_scale.np[r].tolist() == [1.0, 0.0]


def test_rows_are_bounded_and_reusable():
    p = plan()
    rows = [p.alloc_row([(1, 1.0, 0)]) for _ in range(8)]
    assert sorted(rows) == list(range(8)) and p.free_rows == 0
    import pytest

    with pytest.raises(RuntimeError, match="control rows"):
        p.alloc_row([(1, 1.0, 0)])
    p.free_row(rows[3])
    assert p.alloc_row([(2, 1.0, 0)]) == rows[3]


def test_allocating_a_row_moves_the_epoch_committed_with_the_step():
    p = plan()
    p.begin(1)
    p.commit(1)
    e0 = int(p.step[2])
    p.alloc_row([(1, 1.0, 0)])
    p.begin(1)
    p.commit(1)
    assert int(p.step[2]) > e0


def test_every_commit_and_reset_bumps_the_step_serial():
    p = plan()
    serials = []
    for _ in range(3):
        p.begin(1)
        p.commit(1)
        serials.append(int(p.step[1]))
        p.reset()
        serials.append(int(p.step[1]))
    serials.append(int(plan().step[1]) or int(plan().epoch))  # another plan: never reused
    assert len(set(serials)) == len(serials)
