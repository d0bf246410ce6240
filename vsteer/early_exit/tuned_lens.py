"""A tuned lens (Belrose et al. 2023) for the early-exit read-out: one affine map per
candidate layer, fit on the model's own tokens so that the final norm + LM head read
the intermediate stream the way the full model reads its last one.

Semantics (x_l = stream after layer l at a position that predicts a token, fp32):
    T_l(x)   = x + x @ A_l + b_l            (A_l [H, H], b_l [H]; zero-initialised, so
                                             the fit starts from the logit lens)
    lens_l   = lm_head(final_norm(T_l(x_l)))
    loss_l   = mean over fit tokens of KL(softmax(full logits) || softmax(lens_l))
Fit with Adam on the fit split of sequences; the logit lens is T_l = identity.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

from vsteer.refusal.hf_model import HFModel

STEPS = 300
LR = 1e-3
BATCH = 256


@dataclass
class LensData:
    x: dict[int, torch.Tensor]  # layer -> [N, H] stream at each predicting position
    full_logp: torch.Tensor  # [N, V] the full model's log-probs (fp16 to bound memory)
    full_tok: torch.Tensor  # [N]
    seq: np.ndarray  # [N] sequence index


@torch.no_grad()
def collect(m: HFModel, seqs, layers: list[int], batch: int = 8) -> LensData:
    xs: dict[int, list[torch.Tensor]] = {la: [] for la in layers}
    logps, toks, seq_ix = [], [], []
    for start in tqdm(range(0, len(seqs), batch), desc="lens states", unit="batch"):
        part = seqs[start:start + batch]
        states = m.streams([s.ids for s in part])
        rows = [(i, p) for i, s in enumerate(part) for p in range(s.first, len(s.ids) - 1)]
        bi = torch.tensor([r[0] for r in rows])
        pi = torch.tensor([r[1] for r in rows])
        last = states[m.num_layers - 1][bi, pi]
        logp = m.model.lm_head(m.model.model.norm(last)).float().log_softmax(-1)
        logps.append(logp.half())
        toks.append(logp.argmax(-1))
        for la in layers:
            xs[la].append(states[la][bi, pi].clone())
        seq_ix.append(np.array([start + r[0] for r in rows]))
    return LensData({la: torch.cat(v) for la, v in xs.items()}, torch.cat(logps),
                    torch.cat(toks), np.concatenate(seq_ix))


def lens_logits(m: HFModel, x: torch.Tensor, a: torch.Tensor | None, b: torch.Tensor | None
                ) -> torch.Tensor:
    if a is not None and b is not None:
        x = x + x @ a + b
    return m.model.lm_head(m.model.model.norm(x)).float()


def fit_layer(m: HFModel, x: torch.Tensor, full_logp: torch.Tensor, steps: int = STEPS,
              seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(A [H, H], b [H]) minimising KL(full || lens) on the given rows."""
    g = torch.Generator().manual_seed(seed)
    h = x.shape[1]
    a = torch.zeros(h, h, requires_grad=True)
    b = torch.zeros(h, requires_grad=True)
    opt = torch.optim.Adam([a, b], lr=LR)
    for _ in range(steps):
        idx = torch.randint(0, len(x), (min(BATCH, len(x)),), generator=g)
        p = full_logp[idx].float()
        q = lens_logits(m, x[idx], a, b).log_softmax(-1)
        loss = (p.exp() * (p - q)).sum(-1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return a.detach(), b.detach()


@torch.no_grad()
def read(m: HFModel, x: torch.Tensor, a: torch.Tensor | None, b: torch.Tensor | None,
         chunk: int = 512) -> tuple[torch.Tensor, torch.Tensor]:
    """(token [N], max softmax probability [N]) of the lens on x."""
    toks, confs = [], []
    for s in range(0, len(x), chunk):
        p = lens_logits(m, x[s:s + chunk], a, b).softmax(-1)
        c, t = p.max(-1)
        toks.append(t)
        confs.append(c)
    return torch.cat(toks), torch.cat(confs)
