"""`vsteer refusal calibrate`: the guard's condition layer and threshold.

The guard scores a prompt by s = cos(x_l[last prompt token], condition[l]). For each
layer l before the force layer, every threshold between held-out scores is tried;
the pair with the best F1 (harmful = positive) among those that flag at most
`max_fpr` of held-out harmless prompts wins. Held-out = the part of the *training*
files that extraction did not fit on; the test files are never read here.
"""

from __future__ import annotations

import numpy as np
import torch
from tqdm import tqdm

from vsteer.artifacts import GuardCalibration, RefusalDirection
from vsteer.refusal.data import split_fit_heldout
from vsteer.refusal.hf_model import HFModel, chunks


@torch.no_grad()
def last_token_states(m: HFModel, prompts: list[str], layers: list[int]) -> torch.Tensor:
    """Stream at the last prompt token: [N, len(layers), H]."""
    out = []
    for c in tqdm(list(chunks(prompts, 16)), desc="prompt states", unit="batch"):
        _, s = m.forward(c, keep_layers=layers)  # [B, k, P, H]
        out.append(s[:, :, -1, :])
    return torch.cat(out)


def guard_scores(states: torch.Tensor, direction: RefusalDirection, layer: int) -> np.ndarray:
    c = torch.from_numpy(direction.unit_condition(layer))
    x = states.float()
    return ((x @ c) / x.norm(dim=-1).clamp_min(1e-12)).numpy()


def best_threshold(pos: np.ndarray, neg: np.ndarray, max_fpr: float
                   ) -> tuple[float, float, float, float]:
    """(f1, threshold, tpr, fpr) maximizing F1 subject to fpr <= max_fpr."""
    best = (-1.0, float("inf"), 0.0, 0.0)
    for t in np.unique(np.concatenate([pos, neg])):
        tp, fp = float((pos >= t).sum()), float((neg >= t).sum())
        fpr = fp / len(neg)
        if fpr > max_fpr or tp == 0:
            continue
        prec, rec = tp / (tp + fp), tp / len(pos)
        f1 = 2 * prec * rec / (prec + rec)
        if f1 > best[0]:
            best = (f1, float(t), rec, fpr)
    return best


def calibrate_guard(m: HFModel, direction: RefusalDirection, harmful: list[str],
                    harmless: list[str], max_fpr: float = 0.05) -> GuardCalibration:
    _, held_h = split_fit_heldout(harmful)
    _, held_s = split_fit_heldout(harmless)
    layers = list(range(1, direction.layer))
    if not layers:
        raise ValueError(f"force layer {direction.layer} leaves no layer for the condition")
    sh, ss = last_token_states(m, held_h, layers), last_token_states(m, held_s, layers)
    per_layer, best = {}, None
    for k, la in enumerate(layers):
        f1, thr, tpr, fpr = best_threshold(guard_scores(sh[:, k], direction, la),
                                           guard_scores(ss[:, k], direction, la), max_fpr)
        per_layer[str(la)] = {"f1": f1, "threshold": thr, "tpr": tpr, "fpr": fpr}
        if f1 >= 0 and (best is None or f1 > best[1]):
            best = (la, f1, thr)
    if best is None:
        raise ValueError(f"no layer separates held-out prompts at fpr <= {max_fpr}")
    return GuardCalibration(best[0], best[2], best[1],
                            {"per_layer": per_layer, "max_fpr": max_fpr,
                             "held_out_harmful": len(held_h), "held_out_harmless": len(held_s)})
