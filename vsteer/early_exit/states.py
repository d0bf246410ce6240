"""Per-token exit data from transformers (fp32), at the points the runtime reads.

For every position that predicts a next token: the exit features at each candidate
layer (`vsteer.artifacts.exit_predictor.exit_features`), whether the logit-lens token
at that layer (final norm + LM head on the layer's stream) equals the full model's
greedy token, and the lens's own softmax confidence (for comparison only: it costs an
LM-head product per layer, the linear predictor a dot product).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

from vsteer.artifacts.exit_predictor import exit_features
from vsteer.early_exit.corpus import Sequence
from vsteer.refusal.hf_model import HFModel, chunks

LENS_CHUNK = 512  # rows per LM-head product (bounds the [rows, V] logits buffer)


@dataclass
class ExitStates:
    feats: np.ndarray  # [N, K, H + 1]
    agree: np.ndarray  # [N, K] bool: lens token at layer k == full model's token
    softmax_conf: np.ndarray  # [N, K] max softmax probability of the lens at layer k
    seq: np.ndarray  # [N] index of the sequence each token comes from
    layers: list[int]  # K candidate layers


@torch.no_grad()
def lens_tokens(m: HFModel, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(argmax token [N], max softmax probability [N]) of final norm + LM head on x."""
    toks, confs = [], []
    for a in range(0, x.shape[0], LENS_CHUNK):
        logits = m.model.lm_head(m.model.model.norm(x[a:a + LENS_CHUNK]))  # [n, V]
        p = torch.softmax(logits.float(), dim=-1)
        conf, tok = p.max(dim=-1)
        toks.append(tok)
        confs.append(conf)
    return torch.cat(toks), torch.cat(confs)


@torch.no_grad()
def extract_exit_states(m: HFModel, seqs: list[Sequence], layers: list[int],
                        batch: int = 8) -> ExitStates:
    n_l = m.num_layers
    feats, agree, sconf, seq_ix = [], [], [], []
    start = 0
    for part in tqdm(list(chunks(seqs, batch)), desc="exit states", unit="batch"):
        states = m.streams([s.ids for s in part])
        rows = [(i, p) for i, s in enumerate(part) for p in range(s.first, len(s.ids) - 1)]
        bi = torch.tensor([r[0] for r in rows])
        pi = torch.tensor([r[1] for r in rows])
        full_tok, _ = lens_tokens(m, states[n_l - 1][bi, pi])  # [n]
        f = np.zeros((len(rows), len(layers), m.hidden_size + 1), np.float32)
        a = np.zeros((len(rows), len(layers)), bool)
        c = np.zeros((len(rows), len(layers)), np.float32)
        for k, la in enumerate(layers):
            x = states[la][bi, pi]  # [n, H]
            f[:, k] = exit_features(x.numpy(), states[la - 1][bi, pi].numpy())
            tok, conf = lens_tokens(m, x)
            a[:, k] = (tok == full_tok).numpy()
            c[:, k] = conf.numpy()
        feats.append(f)
        agree.append(a)
        sconf.append(c)
        seq_ix.append(np.array([start + r[0] for r in rows], np.int64))
        start += len(part)
    return ExitStates(np.concatenate(feats), np.concatenate(agree), np.concatenate(sconf),
                      np.concatenate(seq_ix), list(layers))
