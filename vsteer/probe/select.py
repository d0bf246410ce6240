"""Choosing the probe's layer, pooling and L2 strength for *transfer*: by
leave-one-source-out AUROC among the training sources (issue 16).

A probe picked by validation AUROC on its own distribution (the geography set)
scored chance on other subjects. With >= MIN_SOURCES training sources, each candidate
(pooling, layer, l2) is scored as

Semantics:
    score(c) = mean over training sources g of AUROC on g of the linear probe c fit on
               the other training sources (sources with one label only are skipped)
    chosen   = argmax score (ties: the earlier candidate in CANDIDATE order)
so the probe's layer is the one whose signal carried across subjects, not the one
that fit one subject best.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from vsteer.probe.metrics import auroc

MIN_SOURCES = 3
LAYER_STRIDE = 2
GROUP_L2 = (30.0, 300.0)


@dataclass(frozen=True)
class Candidate:
    pooling: str
    layer: int
    l2: float


def candidates(num_layers: int, poolings: tuple[str, ...] = ("mean", "last")
               ) -> list[Candidate]:
    layers = list(range(LAYER_STRIDE - 1, num_layers, LAYER_STRIDE))
    return [Candidate(p, la, l2) for p in poolings for la in layers for l2 in GROUP_L2]


def group_scores(feats: dict[str, np.ndarray], y: np.ndarray, groups: np.ndarray,
                 cands: list[Candidate]) -> dict[Candidate, float]:
    """Leave-one-group-out mean AUROC per candidate (rows: all given rows)."""
    from vsteer.probe.train import fit_logistic, linear_scores

    names = [g for g in np.unique(groups) if len(np.unique(y[groups == g])) == 2]
    if len(names) < 2:
        raise ValueError("source selection needs two sources with both labels")
    out: dict[Candidate, float] = {}
    for c in tqdm(cands, desc="probe candidates (by source)", unit="cand"):
        x = feats[c.pooling][:, c.layer]
        aucs = []
        for g in names:
            test = groups == g
            w, b = fit_logistic(x[~test], y[~test], c.l2)
            aucs.append(auroc(linear_scores(x[test], w, b), y[test]))
        out[c] = float(np.mean(aucs))
    return out


def choose(scores: dict[Candidate, float]) -> Candidate:
    return max(scores, key=lambda c: scores[c])  # max keeps the first of equals
