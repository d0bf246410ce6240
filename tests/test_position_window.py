"""Steering positions as absolute spans, and a request's spans cut into segments
(plugins/position_window.py), against a brute-force per-position reference."""

from __future__ import annotations

import itertools

import pytest

from vsteer.plugins.position_window import segments, span


def test_named_positions():
    assert span("all", None, 5) == (0, None)
    assert span("prompt", None, 5) == (0, 5)
    assert span("generated", None, 5) == (5, None)
    assert span("last", None, 5) == (4, 5)


@pytest.mark.parametrize(("window", "want"), [
    ((0, 2), (0, 2)), ((-2, None), (3, 5)), ((1, -1), (1, 4)), ((-9, 2), (0, 2)),
    ((3, 99), (3, 5)), ((4, 2), (4, 4)), ((-1, None), (4, 5)), ((7, None), (5, 5)),
])
def test_prompt_windows_clip_to_the_prompt_and_count_negatives_from_its_end(window, want):
    assert span("prompt", window, 5) == want


def test_generated_windows_start_after_the_prompt():
    assert span("generated", (0, 3), 5) == (5, 8)
    assert span("generated", (2, None), 5) == (7, None)
    with pytest.raises(ValueError):
        span("generated", (-1, None), 5)


def test_segments_match_a_per_position_reference():
    """Every combination of a few windows: at each position, the segment holding it
    lists exactly the entries whose span holds it, in the request's order."""
    p = 4
    choices = [("all", None), ("prompt", None), ("generated", None), ("last", None),
               ("prompt", (1, -1)), ("generated", (1, 3)), ("prompt", (9, 10))]
    for combo in itertools.combinations(range(len(choices)), 3):
        spans = [(k, span(*choices[k], p)) for k in combo]
        segs = segments(spans)
        for a, b in itertools.pairwise(segs):  # ordered, disjoint, merged
            assert a.hi is not None and a.hi <= b.lo
            assert not (a.hi == b.lo and a.entries == b.entries)
        for pos in range(12):
            want = [k for k, (lo, hi) in spans if lo <= pos and (hi is None or pos < hi)]
            got = [s.entries for s in segs if s.lo <= pos and (s.hi is None or pos < s.hi)]
            assert got == ([want] if want else []), (combo, pos)
