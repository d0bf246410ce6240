"""`vsteer probe train`: pick a layer, pooling and probe type by validation AUROC.

Labels: y = 1 when the model's answer was wrong (the probe scores hallucination risk).
Train rows are split by entity into fit (80%) and validation (20%); held-out
(split=test) rows are never read here.
    1. logistic regression on every (layer, pooling), its L2 strength picked from
       L2_GRID: the per-layer AUROC curve
    2. a small MLP on the three best (layer, pooling) pairs
    3. the best on validation wins (an MLP must beat the linear probe by MLP_MARGIN)
    4. threshold: Youden's J on validation
    5. truth[l]: mean last-token stream of right minus wrong answers (mitigate)
    6. per-token probe: logistic regression on the streams that sampled each answer
       token, labelled with the answer's label; layer and L2 by validation token AUROC
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from vsteer.artifacts import HallucinationProbe, ModelFingerprint
from vsteer.probe import select
from vsteer.probe.features import Features, extract_features
from vsteer.probe.metrics import auroc, roc_points, youden_threshold
from vsteer.refusal.hf_model import HFModel

VAL_SHARE = 0.2
MLP_MARGIN = 0.01
MLP_HIDDEN = 32
L2_GRID = (10.0, 30.0, 100.0, 300.0)  # strong: ~1000 questions, 576+ features
MITIGATE_SPAN = 4


def _is_val(entity: str) -> bool:
    return int(hashlib.sha256(f"val:{entity}".encode()).hexdigest()[:8], 16) / 0xFFFFFFFF \
        < VAL_SHARE


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float) -> tuple[np.ndarray, float]:
    """(weight [H], bias) on raw features (standardization folded in), fp64 L-BFGS."""
    xt = torch.from_numpy(x).double()
    mu, sd = xt.mean(0), xt.std(0).clamp_min(1e-6)
    z = (xt - mu) / sd
    yt = torch.from_numpy(y).double()
    w = torch.zeros(x.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(z @ w + b, yt) \
            + l2 * (w * w).sum() / len(y)
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        weight = w / sd
        bias = b - (mu * weight).sum()
    return weight.float().numpy(), float(bias)


def fit_mlp(x: np.ndarray, y: np.ndarray, seed: int = 0, steps: int = 400
            ) -> dict[str, np.ndarray]:
    torch.manual_seed(seed)
    xt = torch.from_numpy(x).float()
    mu, sd = xt.mean(0), xt.std(0).clamp_min(1e-6)
    z = (xt - mu) / sd
    yt = torch.from_numpy(y).float()
    w1 = torch.nn.Parameter(torch.randn(x.shape[1], MLP_HIDDEN) / x.shape[1] ** 0.5)
    b1 = torch.nn.Parameter(torch.zeros(MLP_HIDDEN))
    w2 = torch.nn.Parameter(torch.randn(MLP_HIDDEN) / MLP_HIDDEN ** 0.5)
    b2 = torch.nn.Parameter(torch.zeros(()))
    opt = torch.optim.AdamW([w1, b1, w2, b2], lr=1e-3, weight_decay=0.1)
    for _ in range(steps):
        opt.zero_grad()
        o = torch.relu(z @ w1 + b1) @ w2 + b2
        torch.nn.functional.binary_cross_entropy_with_logits(o, yt).backward()
        opt.step()
    return {"w1": w1.detach().numpy(), "b1": b1.detach().numpy(), "w2": w2.detach().numpy(),
            "b2": np.float32(b2.item()), "mu": mu.numpy(), "sigma": sd.numpy()}


def best_logistic(xf: np.ndarray, yf: np.ndarray, xv: np.ndarray, yv: np.ndarray
                   ) -> tuple[np.ndarray, float, float]:
    """(weight, bias, validation AUROC) of the best L2 strength in L2_GRID."""
    best: tuple[np.ndarray, float, float] | None = None
    for l2 in L2_GRID:
        w, b = fit_logistic(xf, yf, l2)
        a = auroc(linear_scores(xv, w, b), yv)
        if best is None or a > best[2]:
            best = (w, b, a)
    assert best is not None
    return best


def linear_scores(x: np.ndarray, w: np.ndarray, b: float) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-(x.astype(np.float64) @ w + b)))


def _mlp_scores(x: np.ndarray, t: dict[str, np.ndarray]) -> np.ndarray:
    h = np.maximum(((x - t["mu"]) / t["sigma"]) @ t["w1"] + t["b1"], 0.0)
    return 1.0 / (1.0 + np.exp(-(h @ t["w2"] + float(t["b2"]))))


def row_sources(rows: list[dict[str, Any]]) -> np.ndarray:
    return np.array([str(r.get("source") or "default") for r in rows])


def train_probe(m: HFModel, rows: list[dict[str, Any]], source: str
                ) -> tuple[HallucinationProbe, dict[str, Any]]:
    if len(rows) < 50:
        raise SystemExit(f"need at least 50 training questions, got {len(rows)}")
    f = extract_features(m, rows, list(range(0, m.num_layers, 3)))
    fp = ModelFingerprint(m.model.config.architectures[0], m.hidden_size, m.num_layers)
    return fit_probe(f, rows, fp, source)


def _select_by_validation(feats: dict[str, np.ndarray], y: np.ndarray, fit: np.ndarray,
                          val: np.ndarray, n_l: int, report: dict[str, Any]
                          ) -> tuple[dict[str, Any], np.ndarray, float, dict | None]:
    """One source: layer/pooling by validation AUROC, an MLP if it beats the linear
    probe by MLP_MARGIN. Returns (best, weight, bias, mlp tensors or None)."""
    curve: dict[str, list[float]] = {}
    linear: dict[tuple[str, int], tuple[np.ndarray, float, float]] = {}
    for pooling, arr in feats.items():
        curve[pooling] = []
        for la in tqdm(range(n_l), desc=f"probes ({pooling} pooling)", unit="layer"):
            linear[(pooling, la)] = best_logistic(arr[fit, la], y[fit], arr[val, la], y[val])
            curve[pooling].append(linear[(pooling, la)][2])
    ranked = sorted(linear, key=lambda k: -linear[k][2])
    best_pool, best_layer = ranked[0]
    best = {"type": "linear", "pooling": best_pool, "layer": best_layer,
            "val_auroc": linear[ranked[0]][2], "selection": "validation"}
    mlp_results = []
    chosen_mlp = None
    for pooling, la in ranked[:3]:
        t = fit_mlp(feats[pooling][fit, la], y[fit])
        a = auroc(_mlp_scores(feats[pooling][val, la], t), y[val])
        mlp_results.append({"pooling": pooling, "layer": la, "val_auroc": a})
        if a > best["val_auroc"] + MLP_MARGIN:
            best = {"type": "mlp", "pooling": pooling, "layer": la, "val_auroc": a,
                    "selection": "validation"}
            chosen_mlp = t
    report.update({"auroc_curve": curve, "mlp": mlp_results})
    w, b, _ = linear[(best["pooling"], best["layer"])]
    return best, w, b, chosen_mlp


def _select_by_source(feats: dict[str, np.ndarray], y: np.ndarray, fit: np.ndarray,
                      val: np.ndarray, groups: np.ndarray, n_l: int, report: dict[str, Any]
                      ) -> tuple[dict[str, Any], np.ndarray, float, None]:
    """Several sources: the candidate with the best left-one-source-out AUROC
    (vsteer/probe/select.py), refit on every fit row."""
    scores = select.group_scores({k: v[fit] for k, v in feats.items()}, y[fit], groups[fit],
                                 select.candidates(n_l, tuple(feats)))
    c = select.choose(scores)
    w, b = fit_logistic(feats[c.pooling][fit, c.layer], y[fit], c.l2)
    val_auc = auroc(linear_scores(feats[c.pooling][val, c.layer], w, b), y[val])
    curve: dict[str, list[float]] = {p: [float("nan")] * n_l for p in feats}
    for k, v in scores.items():
        if k.l2 == c.l2:
            curve[k.pooling][k.layer] = v
    report.update({"auroc_curve": curve, "mlp": [], "source_auroc": scores[c]})
    best = {"type": "linear", "pooling": c.pooling, "layer": c.layer, "val_auroc": val_auc,
            "selection": "by-source", "l2": c.l2, "source_auroc": scores[c]}
    return best, w, b, None


def fit_probe(f: Features, rows: list[dict[str, Any]], fp: ModelFingerprint, source: str
              ) -> tuple[HallucinationProbe, dict[str, Any]]:
    """Everything after the hidden states: selection, fit, threshold, risk calibration
    (the validation rows), truth direction, per-token probe."""
    y = np.array([0 if r["correct"] else 1 for r in rows], np.float64)
    if y.min() == y.max():
        raise SystemExit("every training answer has the same label; nothing to learn")
    val = np.array([_is_val(r["entity"]) for r in rows])
    fit = ~val
    n_l = fp.num_layers
    token_layers = f.token_layers
    groups = row_sources(rows)
    feats = {"mean": f.mean, "last": f.last}
    report: dict[str, Any] = {"source": source, "rows": len(rows), "fit": int(fit.sum()),
                              "val": int(val.sum()), "wrong_rate": float(y.mean()),
                              "layers": list(range(n_l)),
                              "training_sources": sorted(set(groups.tolist()))}
    if len(np.unique(groups[fit])) >= select.MIN_SOURCES:
        best, w, bias, chosen_mlp = _select_by_source(feats, y, fit, val, groups, n_l, report)
    else:
        best, w, bias, chosen_mlp = _select_by_validation(feats, y, fit, val, n_l, report)
    pooling, layer = best["pooling"], best["layer"]
    xv = feats[pooling][val, layer]
    if chosen_mlp is not None:
        tensors = {k: np.asarray(v, np.float32) for k, v in chosen_mlp.items() if k != "b2"}
        bias = float(chosen_mlp["b2"])
        val_scores = _mlp_scores(xv, chosen_mlp)
    else:
        tensors = {"weight": w}
        val_scores = linear_scores(xv, w, bias)
    threshold = youden_threshold(val_scores, y[val])

    right, wrong = y == 0, y == 1
    truth = (f.last[right].mean(0) - f.last[wrong].mean(0)).astype(np.float32)  # [L, H]
    mitigate = [la for la in range(layer + 1, layer + 1 + MITIGATE_SPAN) if la < n_l]

    tok_y = y[f.token_row]
    tok_val = val[f.token_row]
    tok_curve = []
    tok_best = (-1.0, -1, None, 0.0)
    for j, la in enumerate(tqdm(token_layers, desc="per-token probes", unit="layer")):
        w, b, a = best_logistic(f.tokens[~tok_val, j], tok_y[~tok_val], f.tokens[tok_val, j],
                                 tok_y[tok_val])
        tok_curve.append(a)
        if a > tok_best[0]:
            tok_best = (a, la, w, b)

    fpr, tpr, _ = roc_points(val_scores, y[val])
    report.update({
        "chosen": {**best, "threshold": threshold,
                   "val_tpr": float((val_scores[y[val] == 1] >= threshold).mean()),
                   "val_fpr": float((val_scores[y[val] == 0] >= threshold).mean()),
                   "mitigate_layers": mitigate, "token_layer": tok_best[1],
                   "token_val_auroc": tok_best[0]},
        "token_layers": token_layers, "token_auroc_curve": tok_curve,
        "roc": {"fpr": fpr.tolist(), "tpr": tpr.tolist()},
    })
    probe = HallucinationProbe(
        layer=layer, pooling=pooling, probe_type=best["type"], tensors=tensors, bias=bias,
        threshold=threshold, truth=truth, mitigate_layers=mitigate, fingerprint=fp,
        token_layer=tok_best[1], token_weight=tok_best[2], token_bias=tok_best[3],
        conformal_scores=val_scores.astype(np.float32),
        conformal_wrong=y[val].astype(np.float32),
        scores={k: report["chosen"][k] for k in ("val_auroc", "threshold", "val_tpr",
                                                 "val_fpr", "token_val_auroc")}
        | {"source": source, "rows": len(rows), "selection": best["selection"],
           "training_sources": report["training_sources"],
           "risk_calibration": {"questions": int(val.sum()),
                                "rows": "validation rows (entity split), not fit on"}})
    return probe, report


def write_train_report(out: Path, report: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    fig, ax = plt.subplots(figsize=(7, 4))
    for pooling, ys in report["auroc_curve"].items():
        ax.plot(report["layers"], ys, marker=".", label=f"prompt, {pooling} pooling")
    ax.plot(report["token_layers"], report["token_auroc_curve"], marker="x",
            label="per-token probe")
    c = report["chosen"]
    ax.axvline(c["layer"], color="grey", ls=":", label=f"chosen: layer {c['layer']}")
    ax.axhline(0.5, color="black", lw=0.5)
    ax.set_xlabel("layer")
    ax.set_ylabel("validation AUROC")
    ax.set_title("Hallucination probe: validation AUROC by layer")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "auroc_by_layer.png", dpi=110)
    plt.close(fig)
    plot_roc(out / "roc.png", report["roc"]["fpr"], report["roc"]["tpr"],
             f"validation ROC (AUROC {c['val_auroc']:.3f})")


def plot_roc(path: Path, fpr: list[float], tpr: list[float], title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.plot(fpr, tpr, drawstyle="steps-post")
    ax.plot([0, 1], [0, 1], color="grey", ls=":")
    ax.set_xlabel("false positive rate (right answers flagged)")
    ax.set_ylabel("true positive rate (wrong answers flagged)")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
