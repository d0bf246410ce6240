"""Steering vectors from contrastive pairs: difference in means, or PCA of differences."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from vsteer.artifacts import ModelFingerprint, SteeringVector


def load_pairs(path: str | Path) -> list[tuple[str, str]]:
    pairs = []
    for n, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        row = json.loads(line)
        if not isinstance(row.get("positive"), str) or not isinstance(row.get("negative"), str):
            raise ValueError(f"{path}:{n}: each line needs string 'positive' and 'negative'")
        pairs.append((row["positive"], row["negative"]))
    if len(pairs) < 2:
        raise ValueError(f"{path}: need at least 2 pairs, found {len(pairs)}")
    return pairs


def parse_layers(spec: str, num_layers: int) -> list[int]:
    """"8-20" (inclusive), "3,5,7", or "all"."""
    if spec == "all":
        return list(range(num_layers))
    layers: set[int] = set()
    for part in spec.split(","):
        if "-" in part:
            a, b = (int(x) for x in part.split("-", 1))
            layers.update(range(a, b + 1))
        else:
            layers.add(int(part))
    bad = sorted(la for la in layers if not 0 <= la < num_layers)
    if bad:
        raise ValueError(f"layers {bad} out of range (model has {num_layers}, 0..{num_layers-1})")
    return sorted(layers)


def pool(states: list[np.ndarray]) -> np.ndarray:
    """Mean over each text's tokens: [N] x [P, L, H] -> [N, L, H]."""
    return np.stack([s.mean(axis=0) for s in states])


def directions_from(pos: np.ndarray, neg: np.ndarray, method: str) -> np.ndarray:
    """pos, neg: [N, L, H] pooled states of paired texts -> [L, H] directions.

    diffmean: mean(pos) - mean(neg).
    pca: first (uncentered) principal axis of the paired differences, signed so positives score
    higher, scaled to the mean projection of the differences (so scale 1 moves the
    stream by about one typical pos/neg difference, as diffmean does).
    """
    diffs = pos - neg  # [N, L, H]
    if method == "diffmean":
        return diffs.mean(axis=0)
    if method == "pca":
        out = np.empty(diffs.shape[1:], np.float32)
        for la in range(diffs.shape[1]):
            d = diffs[:, la, :]  # [N, H]
            _, _, vt = np.linalg.svd(d, full_matrices=False)  # uncentered: keeps the mean
            u = vt[0]
            proj = d @ u  # [N]
            if proj.mean() < 0:
                u, proj = -u, -proj
            out[la] = u * proj.mean()
        return out
    raise ValueError(f"unknown method {method!r} (diffmean or pca)")


def build_vector(pos: np.ndarray, neg: np.ndarray, layers: list[int], method: str,
                 fingerprint: ModelFingerprint, provenance: dict) -> SteeringVector:
    dirs = directions_from(pos, neg, method)
    return SteeringVector({la: dirs[i].astype(np.float32) for i, la in enumerate(layers)},
                          fingerprint, method=method, provenance=provenance)
