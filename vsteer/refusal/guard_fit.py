"""Fitting the guard from prompt states: the condition vectors, then a threshold chosen
for an operator-stated false-positive rate (issue 16: thresholds that transfer).

Semantics (states from `prompt_states`, every source split by `split_fit_heldout`):
    condition[l] = mean(cond_l over fit harmful) - mean(cond_l over fit harmless)
    score_l(x)   = cos(last_l(x), condition[l])          (what the runtime computes)
    threshold_l  = rule over the held-out harmless scores of each source s:
                     t_s = the smallest t with share(score_l >= t) <= max_fpr on s
                     "worst-source": max_s t_s   (FPR <= max_fpr on every source)
                     "pooled":       t over all sources' harmless scores together
    layer        = argmax over l < force layer of the held-out harmful share >= t_l
                   (ties: the earlier layer)
Calibration data are pooled from several sources on purpose: one distribution's
threshold did not transfer (issue 16), and "worst-source" keeps the benign flag rate
under the target on each source it saw, not only on their mix.

The linear guard (fit_linear_guard, the default since issue 16) replaces the cosine:
    v_l(x)       = mean of x_l over the post-instruction tokens (cond_l)
    w_l, b_l     = L2-regularised logistic regression on the fit rows (harmful = 1),
                   pooled over every source; with matched harmless prompts in each
                   source's style, the weight must separate content, not phrasing
    score_l(x)   = sigmoid(v_l(x) · w_l + b_l); threshold and layer as above
On left-one-source-out the cosine's score shifted with each source's phrasing (one
threshold flagged a third of one source's harmless prompts and none of another's
harmful ones); the classifier's did much less (bench/RESULTS.md).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace

import numpy as np
import torch
from tqdm import tqdm

from vsteer.artifacts import GuardCalibration, RefusalDirection
from vsteer.refusal.data import split_fit_heldout
from vsteer.refusal.hf_model import HFModel, chunks
from vsteer.refusal.sources import PromptSource

FPR_RULES = ("worst-source", "pooled")


@dataclass
class PromptStates:
    cond: np.ndarray  # [N, L, H] mean stream over the post-instruction positions
    last: np.ndarray  # [N, L, H] stream at the last prompt token


@torch.no_grad()
def prompt_states(m: HFModel, prompts: list[str], desc: str = "prompt states",
                  batch: int = 16) -> PromptStates:
    layers = list(range(m.num_layers))
    cond, last = [], []
    for c in tqdm(list(chunks(prompts, batch)), desc=desc, unit="batch"):
        _, s = m.forward(c, keep_layers=layers)  # [B, L, P, H]
        cond.append(s.mean(dim=2).numpy())
        last.append(s[:, :, -1, :].numpy())
    return PromptStates(np.concatenate(cond), np.concatenate(last))


@dataclass
class LabelledStates:
    """Prompt states with labels: harmful (True) / harmless, source, fit or held-out."""

    states: PromptStates
    harmful: np.ndarray  # [N] bool
    source: np.ndarray  # [N] str
    held: np.ndarray  # [N] bool

    def subset(self, keep: np.ndarray) -> LabelledStates:
        return LabelledStates(PromptStates(self.states.cond[keep], self.states.last[keep]),
                              self.harmful[keep], self.source[keep], self.held[keep])


def label_sources(sources: list[PromptSource]) -> tuple[list[str], np.ndarray, np.ndarray,
                                                      np.ndarray]:
    """All prompts in order, with (harmful, source, held-out) columns."""
    prompts: list[str] = []
    harmful: list[bool] = []
    src: list[str] = []
    held: list[bool] = []
    for s in sources:
        for is_harmful, ps in ((True, s.harmful), (False, s.harmless)):
            _, held_part = split_fit_heldout(ps)
            held_set = set(held_part)
            prompts += ps
            harmful += [is_harmful] * len(ps)
            src += [s.name] * len(ps)
            held += [p in held_set for p in ps]
    return prompts, np.array(harmful), np.array(src), np.array(held)


def condition_vectors(data: LabelledStates) -> np.ndarray:
    """[L, H] from the fit rows."""
    fit = ~data.held
    h, s = fit & data.harmful, fit & ~data.harmful
    if not h.any() or not s.any():
        raise ValueError("the fit rows need both harmful and harmless prompts")
    return (data.states.cond[h].mean(0) - data.states.cond[s].mean(0)).astype(np.float32)


def cosine(x: np.ndarray, v: np.ndarray) -> np.ndarray:
    """x [N, H], v [H] -> [N]."""
    u = v / max(float(np.linalg.norm(v)), 1e-12)
    return (x.astype(np.float64) @ u) / np.maximum(np.linalg.norm(x, axis=-1), 1e-12)


def fpr_threshold(benign: np.ndarray, max_fpr: float) -> float:
    """The smallest threshold (among score values and +inf) flagging <= max_fpr."""
    allowed = int(np.floor(max_fpr * len(benign) + 1e-9))
    desc = np.sort(benign)[::-1]
    if allowed >= len(desc):
        return float(desc[-1])
    return float(np.nextafter(desc[allowed], np.inf))  # flags at most `allowed`


def threshold_for(scores: np.ndarray, sources: np.ndarray, max_fpr: float, rule: str
                  ) -> float:
    if rule == "pooled":
        return fpr_threshold(scores, max_fpr)
    if rule == "worst-source":
        return max(fpr_threshold(scores[sources == s], max_fpr) for s in np.unique(sources))
    raise ValueError(f"fpr rule must be one of {FPR_RULES}")


def _f1(tpr: float, fpr: float, n_pos: int, n_neg: int) -> float:
    """F1 of harmful detection at a (tpr, fpr) operating point."""
    prec = tpr * n_pos / max(tpr * n_pos + fpr * n_neg, 1e-12)
    return 2 * prec * tpr / max(prec + tpr, 1e-12)


def fit_guard(data: LabelledStates, force_layer: int, max_fpr: float, rule: str,
              calibrated_on: list[dict]) -> tuple[np.ndarray, GuardCalibration]:
    """(condition [L, H], calibration) from the fit rows (vectors) and held rows
    (layer and threshold)."""
    if force_layer < 2:
        raise ValueError(f"force layer {force_layer} leaves no layer for the condition")
    condition = condition_vectors(data)
    held = data.held
    pos, neg = held & data.harmful, held & ~data.harmful
    if not pos.any() or not neg.any():
        raise ValueError("calibration needs held-out harmful and harmless prompts")
    per_layer: dict[str, dict[str, float]] = {}
    best: tuple[float, int, float] | None = None
    for la in range(1, force_layer):
        s = cosine(data.states.last[:, la], condition[la])
        t = threshold_for(s[neg], data.source[neg], max_fpr, rule)
        tpr, fpr = float((s[pos] >= t).mean()), float((s[neg] >= t).mean())
        per_layer[str(la)] = {"threshold": t, "tpr": tpr, "fpr": fpr}
        if best is None or tpr > best[0]:
            best = (tpr, la, t)
    assert best is not None
    tpr, layer, thr = best
    fpr = per_layer[str(layer)]["fpr"]
    f1 = _f1(tpr, fpr, int(pos.sum()), int(neg.sum()))
    cal = GuardCalibration(layer, thr, float(f1), {
        "per_layer": per_layer, "max_fpr": max_fpr, "fpr_rule": rule,
        "held_out_harmful": int(pos.sum()), "held_out_harmless": int(neg.sum()),
        "calibrated_on": calibrated_on})
    return condition, cal


LINEAR_L2 = 30.0
GUARD_KINDS = ("linear", "cosine")


def guard_score(d: RefusalDirection, states: PromptStates) -> np.ndarray:
    """The guard's score for prompts (numpy twin of the runtime's job): [N]."""
    from vsteer.probe.train import linear_scores

    cal = d.calibration
    if cal is None:
        raise ValueError("the direction has no guard calibration")
    la = cal.condition_layer
    if cal.kind == "linear":
        assert d.guard_weight is not None
        return linear_scores(states.cond[:, la], d.guard_weight, cal.bias)
    return cosine(states.last[:, la], d.condition[la])


def fit_guard_direction(data: LabelledStates, base: RefusalDirection, max_fpr: float,
                        rule: str, calibrated_on: list[dict], kind: str, window: int
                        ) -> RefusalDirection:
    """`base` with its guard refit on `data` (force vector and layer kept)."""
    weight = None
    if kind == "linear":
        condition, weight, cal = fit_linear_guard(data, base.layer, max_fpr, rule,
                                                  calibrated_on, window)
    elif kind == "cosine":
        condition, cal = fit_guard(data, base.layer, max_fpr, rule, calibrated_on)
    else:
        raise ValueError(f"guard kind must be one of {GUARD_KINDS}")
    return replace(base, condition={la: condition[la] for la in range(len(condition))},
                   calibration=cal, guard_weight=weight,
                   provenance={**base.provenance,
                               "condition_fit_on": [c["source"] for c in calibrated_on]})


def fit_linear_guard(data: LabelledStates, force_layer: int, max_fpr: float, rule: str,
                     calibrated_on: list[dict], window: int
                     ) -> tuple[np.ndarray, np.ndarray, GuardCalibration]:
    """(condition [L, H] diff-means (kept for the record), weight [H], calibration)."""
    from vsteer.probe.train import fit_logistic, linear_scores

    if force_layer < 2:
        raise ValueError(f"force layer {force_layer} leaves no layer for the condition")
    condition = condition_vectors(data)
    fit, held = ~data.held, data.held
    pos, neg = held & data.harmful, held & ~data.harmful
    if not pos.any() or not neg.any():
        raise ValueError("calibration needs held-out harmful and harmless prompts")
    y = data.harmful.astype(np.float64)
    per_layer: dict[str, dict[str, float]] = {}
    best: tuple[float, int, float, np.ndarray, float] | None = None
    for la in tqdm(range(1, force_layer), desc="guard classifiers", unit="layer"):
        w, b = fit_logistic(data.states.cond[fit, la], y[fit], LINEAR_L2)
        s = linear_scores(data.states.cond[:, la], w, b)
        t = threshold_for(s[neg], data.source[neg], max_fpr, rule)
        tpr, fpr = float((s[pos] >= t).mean()), float((s[neg] >= t).mean())
        per_layer[str(la)] = {"threshold": t, "tpr": tpr, "fpr": fpr}
        if best is None or tpr > best[0]:
            best = (tpr, la, t, w, b)
    assert best is not None
    tpr, layer, thr, weight, bias = best
    fpr = per_layer[str(layer)]["fpr"]
    f1 = _f1(tpr, fpr, int(pos.sum()), int(neg.sum()))
    cal = GuardCalibration(layer, thr, float(f1), {
        "per_layer": per_layer, "max_fpr": max_fpr, "fpr_rule": rule, "l2": LINEAR_L2,
        "held_out_harmful": int(pos.sum()), "held_out_harmless": int(neg.sum()),
        "calibrated_on": calibrated_on}, kind="linear", bias=float(bias), window=window)
    return condition, weight.astype(np.float32), cal


def describe(sources: list[PromptSource]) -> list[dict]:
    """What calibration saw, as the artifact records it."""
    def digest(ps: list[str]) -> str:
        return hashlib.sha256("\n".join(ps).encode()).hexdigest()[:16]

    return [{"source": s.name, "harmful": len(s.harmful), "harmless": len(s.harmless),
             "sha256": digest(s.harmful + s.harmless)} for s in sources]
