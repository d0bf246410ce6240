"""Per-step token plan: prompt/generated split, idle reset."""

import torch

from vsteer.plugins.token_plan import TokenPlan


def plan():
    return TokenPlan(max_tokens=16, max_rows=8, k=2, device=torch.device("cpu"))


def test_rows_and_tokens():
    p = plan()
    p.begin(10)
    r0 = p.add_row([(3, 1.5, 0)])
    r1 = p.add_row([(1, -1.0, 1), (2, 0.5, 2)])
    p.assign(2, 5, r0)
    p.assign(5, 7, r1)
    p.commit(10)
    assert p.token_row.np[:10].tolist() == [-1, -1, 0, 0, 0, 1, 1, -1, -1, -1]
    assert p.row_slot.np[:2].tolist() == [[3, 0], [1, 2]]
    assert p.row_scale.np[1].tolist() == [-1.0, 0.5]
    assert int(p.step[0]) == 5


def test_reset_returns_every_token_to_untouched():
    p = plan()
    p.begin(8)
    p.assign(0, 8, p.add_row([(1, 1.0, 0)]))
    p.commit(8)
    p.reset()
    assert (p.token_row.np == -1).all() and int(p.step[0]) == 0


def test_a_row_with_fewer_entries_clears_stale_ones():
    p = plan()
    p.begin(1)
    p.add_row([(1, 1.0, 0), (2, 1.0, 0)])
    p.reset()
    p.begin(1)
    p.add_row([(5, 1.0, 0)])
    assert p.row_slot.np[0].tolist() == [5, 0]


def test_every_commit_and_reset_bumps_the_step_serial():
    p = plan()
    serials = []
    for _ in range(3):
        p.begin(1)
        p.commit(1)
        serials.append(int(p.step[1]))
        p.reset()
        serials.append(int(p.step[1]))
    assert serials == sorted(set(serials))
