"""Rank an SAE's features by how differently they fire on contrasting texts
(`vsteer sae contrast`), to find e.g. a sentiment feature to steer with.

    act_t[f]  = the SAE's activation of feature f at token t of a text (plain text, no
                chat template, first token dropped), the stream after sae.layer
    mean(x)   = mean over a text's tokens of act_t, then over the texts of one side
    score[f]  = mean(positive)[f] - mean(negative)[f]
Sorted by score, highest first: the head fires on the positive side, the tail on the
negative one.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch

from vsteer.artifacts.sae import SparseAutoencoder
from vsteer.refusal.hf_model import HFModel, chunks


@dataclass(frozen=True)
class FeatureContrast:
    feature: int
    score: float  # mean activation on positive texts minus on negative ones
    positive: float
    negative: float

    def to_dict(self) -> dict:
        return asdict(self)


@torch.no_grad()
def token_activations(m: HFModel, sae: SparseAutoencoder, texts: list[str],
                      batch: int = 16) -> list[np.ndarray]:
    """Per text, act [T - 1, F] at its tokens (plain text, the first token dropped)."""
    out = []
    for chunk in chunks(texts, batch):
        seqs = [m.tok(t)["input_ids"] for t in chunk]
        states = m.streams(seqs)[sae.layer]  # [B, T, H], right-padded
        out += [sae.encode(states[i, 1:len(s)].numpy()) for i, s in enumerate(seqs)]
    return out


def mean_activations(m: HFModel, sae: SparseAutoencoder, texts: list[str]) -> np.ndarray:
    """[F]: the mean over texts of each text's token-mean activation."""
    return np.mean([a.mean(0) for a in token_activations(m, sae, texts)], axis=0)


def contrast_features(m: HFModel, sae: SparseAutoencoder,
                      pairs: list[tuple[str, str]]) -> list[FeatureContrast]:
    pos = mean_activations(m, sae, [p for p, _ in pairs])
    neg = mean_activations(m, sae, [n for _, n in pairs])
    order = np.argsort(-(pos - neg), kind="stable")
    return [FeatureContrast(int(f), float(pos[f] - neg[f]), float(pos[f]), float(neg[f]))
            for f in order]
