"""Probe selection for transfer (vsteer/probe/select.py) and the left-one-source-out
evaluation's bookkeeping (vsteer/probe/loso.py), on synthetic features."""

from __future__ import annotations

import numpy as np

from vsteer.probe import select
from vsteer.probe.features import Features
from vsteer.probe.loso import subset, token_mean_scores
from vsteer.probe.metrics import auroc
from vsteer.probe.train import fit_logistic, linear_scores


def _features(seed: int = 0, n_src: int = 4, per: int = 120, h: int = 24):
    """Layer 1: a weak signal shared by every source. Layer 3: a strong signal along a
    different direction in each source (fits each source, transfers to none)."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(h, n_src + 1)))  # orthonormal directions
    shared, own = 1.2 * q[:, 0], 3.0 * q[:, 1:].T
    y = rng.integers(0, 2, n_src * per).astype(float)
    groups = np.repeat([f"s{k}" for k in range(n_src)], per)
    x = rng.normal(size=(n_src * per, 6, h))
    x[:, 1] += y[:, None] * shared
    for k in range(n_src):
        rows = groups == f"s{k}"
        x[rows, 3] += y[rows, None] * own[k]
    return x, y, groups


def test_selection_by_source_prefers_the_signal_that_transfers():
    x, y, groups = _features()
    feats = {"last": x}
    # pooled validation (a random split) would pick layer 3: it fits every source seen
    val = np.arange(len(y)) % 5 == 0
    pooled = {}
    for la in (1, 3):
        w, b = fit_logistic(x[~val, la], y[~val], 30.0)
        pooled[la] = auroc(linear_scores(x[val, la], w, b), y[val])
    assert pooled[3] > pooled[1]
    scores = select.group_scores(feats, y, groups, select.candidates(6, ("last",)))
    chosen = select.choose(scores)
    assert chosen.layer == 1
    assert scores[chosen] > 0.6
    assert max(v for c, v in scores.items() if c.layer == 3) < scores[chosen] - 0.1


def test_candidates_cover_every_pooling_and_l2_on_a_layer_stride():
    cs = select.candidates(30)
    assert {c.pooling for c in cs} == {"mean", "last"}
    assert sorted({c.layer for c in cs}) == list(range(1, 30, 2))
    assert {c.l2 for c in cs} == set(select.GROUP_L2)


def test_subset_keeps_token_rows_pointing_at_their_question():
    f = Features(mean=np.arange(5)[:, None, None] * np.ones((5, 2, 3)),
                 last=np.zeros((5, 2, 3)),
                 tokens=np.arange(8)[:, None, None] * np.ones((8, 1, 3)),
                 token_row=np.array([0, 0, 1, 2, 2, 2, 4, 4]), token_layers=[0])
    keep = np.array([False, True, True, False, True])
    g = subset(f, keep)
    np.testing.assert_array_equal(g.mean[:, 0, 0], [1, 2, 4])
    np.testing.assert_array_equal(g.token_row, [0, 1, 1, 1, 2, 2])
    np.testing.assert_array_equal(g.tokens[:, 0, 0], [2, 3, 4, 5, 6, 7])


def test_token_mean_score_is_the_mean_of_each_questions_token_scores():
    class P:
        has_token_probe, token_layer, token_bias = True, 0, 0.0
        token_weight = np.array([1.0, 0.0, 0.0])

    f = Features(mean=np.zeros((3, 1, 3)), last=np.zeros((3, 1, 3)),
                 tokens=np.array([[[0.0, 0, 0]], [[2.0, 0, 0]], [[-1.0, 0, 0]]]),
                 token_row=np.array([0, 0, 2]), token_layers=[0])
    m = token_mean_scores(P(), f, 3)
    sig = lambda z: 1 / (1 + np.exp(-z))  # noqa: E731
    assert m[0] == np.float64((sig(0.0) + sig(2.0)) / 2)
    assert np.isnan(m[1]) and np.isclose(m[2], sig(-1.0))
