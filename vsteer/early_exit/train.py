"""Fit and calibrate an exit predictor (`vsteer exit train`).

Tokens are split by sequence: 60% fit the per-layer logistic predictors (L2 chosen by
AUROC on the calibration part), 20% calibrate the thresholds, 20% test. For an
agreement target T, layer k's threshold is the lowest confidence such that, on the
calibration tokens at or above it, the lens token agrees with the full model's at a
rate >= T (with at least MIN_SUPPORT tokens); otherwise the layer never exits at T.
Checking a layer costs time, so for each target only the layers whose checks pay for
themselves under a cost model (select_checks) keep a threshold.
The test part reports the cascade (exit at the first confident layer): the fraction of
tokens that exit, the fraction of layer compute saved and the token agreement, all
teacher-forced (one token at a time, from full-depth contexts); `vsteer bench
early-exit` measures free-running generation.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
from tqdm import tqdm

from vsteer.artifacts import ExitPredictor, ModelFingerprint
from vsteer.artifacts.exit_predictor import UNREACHABLE
from vsteer.early_exit.states import ExitStates
from vsteer.probe.metrics import auroc
from vsteer.probe.train import best_logistic, linear_scores

TARGETS = [0.9, 0.95, 0.97, 0.98, 0.99, 0.995]
DEFAULT_TARGET = 0.98
MIN_SUPPORT = 10
# Cost model for choosing which layers to check, in units of one decoder layer's
# decode-step time, measured on the CPU of bench/RESULTS.md (SmolLM2-135M, batch 1):
# a skipped layer still fills its K/V (~0.3 of a layer), and a check (two host-side
# jobs: the stream at l - 1 and at l, plus a read-back) costs ~0.2 of a layer.
FILL_COST = 0.3
CHECK_COST = 0.2


def split_of(seq: int) -> str:
    u = int(hashlib.sha256(f"exit:{seq}".encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return "fit" if u < 0.6 else ("cal" if u < 0.8 else "test")


def calibrate(conf: np.ndarray, agree: np.ndarray, target: float,
              min_support: int = MIN_SUPPORT) -> float:
    """The lowest threshold whose accepted tokens agree at a rate >= target."""
    order = np.argsort(-conf, kind="mergesort")
    c, a = conf[order], agree[order].astype(np.float64)
    precision = np.cumsum(a) / np.arange(1, len(a) + 1)  # accept the top n
    ends = np.nonzero(np.r_[c[1:] != c[:-1], True])[0]  # a threshold accepts its ties
    ok = ends[(precision[ends] >= target) & (ends + 1 >= min_support)]
    return float(c[ok[-1]]) if len(ok) else UNREACHABLE


def first_exit(conf: np.ndarray, thresholds: np.ndarray, layers: list[int],
               num_layers: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The cascade: exit at the first layer whose confidence reaches its threshold
    (UNREACHABLE thresholds never do). conf: [N, K]; thresholds: [K]. Returns
    (exits [N] bool, first [N] candidate index, K-1 if none; exit layer [N], L-1 if
    none)."""
    hit = conf >= thresholds[None, :]  # [N, K]
    exits = hit.any(1)
    first = np.where(exits, hit.argmax(1), len(layers) - 1)
    return exits, first, np.where(exits, np.array(layers)[first], num_layers - 1)


def net_saving(conf: np.ndarray, thresholds: np.ndarray, layers: list[int],
               num_layers: int) -> float:
    """Mean layers saved per token under the cost model: exiting after layer e saves
    (L-1-e)(1-FILL_COST); every layer checked before the exit costs CHECK_COST."""
    live = thresholds <= 1.0
    exits, first, exit_layer = first_exit(conf, thresholds, layers, num_layers)
    checks = np.where(exits, np.cumsum(live)[first], live.sum())
    saved = (num_layers - 1 - exit_layer) * (1 - FILL_COST) - CHECK_COST * checks
    return float(saved.mean())


def select_checks(conf: np.ndarray, thresholds: np.ndarray, layers: list[int],
                  num_layers: int) -> np.ndarray:
    """Greedily keep the layers whose checks pay for themselves (net_saving on the
    calibration tokens); the others get UNREACHABLE (never checked at this target)."""
    keep = np.full(len(layers), False)
    best = 0.0
    while True:
        trials = []
        for k in np.nonzero(~keep & (thresholds <= 1.0))[0]:
            t = keep.copy()
            t[k] = True
            trials.append((net_saving(conf, np.where(t, thresholds, UNREACHABLE), layers,
                                      num_layers), k))
        if not trials or max(trials)[0] <= best:
            break
        best, k = max(trials)
        keep[k] = True
    return np.where(keep, thresholds, UNREACHABLE).astype(np.float32)


def cascade(conf: np.ndarray, agree: np.ndarray, thresholds: np.ndarray, layers: list[int],
            num_layers: int) -> dict[str, float]:
    """Exit fraction, compute saved and agreement of the cascade (first_exit).
    conf, agree: [N, K]; thresholds: [K]."""
    exits, first, exit_layer = first_exit(conf, thresholds, layers, num_layers)
    agreed = np.where(exits, agree[np.arange(len(conf)), first], True)
    return {"exit_fraction": float(exits.mean()),
            "saved_fraction": float(((num_layers - 1 - exit_layer) / num_layers).mean()),
            "agreement": float(agreed.mean())}


def train_exit_predictor(st: ExitStates, fingerprint: ModelFingerprint, source: str
                         ) -> tuple[ExitPredictor, dict[str, Any]]:
    part = np.array([split_of(int(s)) for s in st.seq])
    fit, cal, test = part == "fit", part == "cal", part == "test"
    if min(fit.sum(), cal.sum(), test.sum()) < MIN_SUPPORT:
        raise SystemExit(f"corpus too small: {int(fit.sum())}/{int(cal.sum())}/"
                         f"{int(test.sum())} fit/calibration/test tokens")
    k_n = len(st.layers)
    weight = np.zeros((k_n, st.feats.shape[2]), np.float32)
    bias = np.zeros(k_n, np.float32)
    conf = np.zeros(st.agree.shape, np.float64)  # [N, K]
    per_layer = []
    for k, la in enumerate(tqdm(st.layers, desc="exit predictors", unit="layer")):
        y = st.agree[:, k].astype(np.float64)
        if y[fit].min() == y[fit].max():  # one class: the constant predictor
            p = float(np.clip(y[fit].mean(), 1e-4, 1 - 1e-4))
            w, b = np.zeros(st.feats.shape[2], np.float32), float(np.log(p / (1 - p)))
        else:
            w, b, _ = best_logistic(st.feats[fit, k], y[fit], st.feats[cal, k], y[cal])
        weight[k], bias[k] = w, b
        conf[:, k] = linear_scores(st.feats[:, k], w, b)
        per_layer.append({
            "layer": la, "lens_agreement": float(y[test].mean()),
            "auroc": auroc(conf[test, k], y[test]),
            "softmax_auroc": auroc(st.softmax_conf[test, k], y[test]),
        })
    thresholds = np.array([[calibrate(conf[cal, k], st.agree[cal, k], t) for t in TARGETS]
                           for k in range(k_n)], np.float32)  # [K, G]
    n_l = fingerprint.num_layers
    all_layers = thresholds.copy()
    for g in range(len(TARGETS)):
        thresholds[:, g] = select_checks(conf[cal], thresholds[:, g], st.layers, n_l)
    curve = [{"target": t, **cascade(conf[test], st.agree[test], thresholds[:, g], st.layers,
                                     n_l)} for g, t in enumerate(TARGETS)]
    for g, t in enumerate(TARGETS):
        for k, row in enumerate(per_layer):
            row[f"coverage@{t}"] = float((conf[test, k] >= all_layers[k, g]).mean())
            row[f"checked@{t}"] = bool(thresholds[k, g] <= 1.0)
        curve[g]["checked_layers"] = [la for k, la in enumerate(st.layers)
                                      if thresholds[k, g] <= 1.0]
        curve[g]["net_layers_saved"] = net_saving(conf[test], thresholds[:, g], st.layers, n_l)
    report = {"source": source, "tokens": {"fit": int(fit.sum()), "calibration": int(cal.sum()),
                                           "test": int(test.sum())},
              "num_layers": n_l, "layers": per_layer, "targets": TARGETS,
              "default_target": DEFAULT_TARGET, "cascade": curve,
              "calibration": _reliability(conf[test], st.agree[test], st.layers)}
    chosen = next(c for c in curve if c["target"] == DEFAULT_TARGET)
    pred = ExitPredictor(layers=list(st.layers), weight=weight, bias=bias, targets=TARGETS,
                         thresholds=thresholds, default_target=DEFAULT_TARGET,
                         fingerprint=fingerprint,
                         scores={"source": source, "test_tokens": int(test.sum()),
                                 **{f"test_{k}": v for k, v in chosen.items()}})
    return pred, report


def _reliability(conf: np.ndarray, agree: np.ndarray, layers: list[int], bins: int = 10
                 ) -> dict[str, Any]:
    """Binned predicted confidence against observed agreement, at four depths."""
    picks = sorted({layers[int(q * (len(layers) - 1))] for q in (0.25, 0.5, 0.75, 1.0)})
    out: dict[str, Any] = {}
    edges = np.linspace(0, 1, bins + 1)
    for la in picks:
        k = layers.index(la)
        b = np.clip(np.digitize(conf[:, k], edges) - 1, 0, bins - 1)
        rows = []
        for i in range(bins):
            m = b == i
            if m.sum():
                rows.append({"predicted": float(conf[m, k].mean()),
                             "observed": float(agree[m, k].mean()), "count": int(m.sum())})
        out[str(la)] = rows
    return out
