"""Hidden states for probe training, from transformers (fp32), at the same points the
runtime reads: the residual stream after each decoder layer.

For each QA row: prompt ids = the chat-templated prompt; then its generated tokens
(teacher-forced). Pooled prompt features per layer (mean over every prompt token, and
the last prompt token), and per-token features at the positions that sampled the
first TOKENS_PER_ANSWER generated tokens (position P-1+j samples token j).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from vsteer.refusal.hf_model import HFModel, chunks

TOKENS_PER_ANSWER = 8


@dataclass
class Features:
    mean: np.ndarray  # [N, L, H]
    last: np.ndarray  # [N, L, H]
    tokens: np.ndarray  # [M, len(token_layers), H]
    token_row: np.ndarray  # [M] row index of each token feature
    token_layers: list[int]


def prompt_ids(m: HFModel, prompt: str) -> list[int]:
    return m.tok(m.chat_text(prompt), add_special_tokens=False)["input_ids"]


@torch.no_grad()
def extract_features(m: HFModel, rows: list[dict[str, Any]], token_layers: list[int],
                     batch: int = 32) -> Features:
    n_l, h = m.num_layers, m.hidden_size
    mean = np.zeros((len(rows), n_l, h), np.float32)
    last = np.zeros((len(rows), n_l, h), np.float32)
    tok_feats: list[np.ndarray] = []
    tok_rows: list[int] = []
    start = 0
    for part in tqdm(list(chunks(rows, batch)), desc="hidden states", unit="batch"):
        seqs, plen, ntok = [], [], []
        for r in part:
            p = prompt_ids(m, r["prompt"])
            gen = list(r.get("completion_token_ids") or [])[:TOKENS_PER_ANSWER]
            seqs.append(p + gen[:-1] if gen else p)
            plen.append(len(p))
            ntok.append(len(gen))
        states = m.streams(seqs)
        stream = torch.stack([states[i] for i in range(n_l)], dim=1)  # [B, L, T, H]
        for i in range(len(part)):
            p = plen[i]
            mean[start + i] = stream[i, :, :p].mean(dim=1).numpy()
            last[start + i] = stream[i, :, p - 1].numpy()
            if ntok[i]:
                pos = torch.arange(p - 1, p - 1 + ntok[i])
                tok_feats.append(stream[i, token_layers][:, pos].transpose(0, 1).numpy())
                tok_rows += [start + i] * ntok[i]
        start += len(part)
    tokens = (np.concatenate(tok_feats) if tok_feats
              else np.zeros((0, len(token_layers), h), np.float32))
    return Features(mean, last, tokens, np.array(tok_rows, np.int64), token_layers)
