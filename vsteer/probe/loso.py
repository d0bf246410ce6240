"""`vsteer eval probe --loso`: the hallucination probe, left-one-source-out.

Input: labelled rows from `vsteer probe dataset --sources all` (the model's own
answers through the engine). Hidden states come once from transformers (fp32, the
same points the runtime reads; tests/test_server_probe.py checks the runtime's score
against this twin). For each source g:
    1. train the probe on every other source with `vsteer probe train`'s recipe
       (fit_probe: layer/pooling by left-one-source-out AUROC among them, threshold
       and risk calibration on their validation rows);
    2. score every question of g and report AUROC (bootstrap CI), the per-token
       probe's mean-score AUROC, and, for each max_error target, the threshold the
       server would use and the error and coverage it achieves on g.
No question of g is read by any step of its fold. For comparison, the report also
holds the in-distribution figures: one probe trained on every source's train split,
tested on each source's held-out entities (split=test).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from vsteer.artifacts import HallucinationProbe, ModelFingerprint
from vsteer.probe.conformal import UnattainableRisk, achieved, risk_threshold
from vsteer.probe.features import Features, extract_features
from vsteer.probe.metrics import auroc
from vsteer.probe.train import fit_probe, linear_scores, row_sources
from vsteer.stats import bootstrap_ci

MAX_ERRORS = (0.1, 0.2, 0.3)
TARGET_AUROC = 0.70  # issue 16, on each left-out source
TARGET_RISK_GAP = 0.05  # achieved error within 0.05 of max_error


def subset(f: Features, keep: np.ndarray) -> Features:
    new_index = np.cumsum(keep) - 1  # old row -> new row
    tok = keep[f.token_row]
    return Features(f.mean[keep], f.last[keep], f.tokens[tok], new_index[f.token_row[tok]],
                    f.token_layers)


def prompt_scores(p: HallucinationProbe, f: Features) -> np.ndarray:
    x = (f.mean if p.pooling == "mean" else f.last)[:, p.layer]
    if p.probe_type == "linear":
        return linear_scores(x, p.tensors["weight"], p.bias)
    return np.array([p.score(v) for v in x])


def token_mean_scores(p: HallucinationProbe, f: Features, n_rows: int) -> np.ndarray:
    """Mean per-token probe score per row (NaN for rows without generated tokens)."""
    if not p.has_token_probe or p.token_weight is None:
        return np.full(n_rows, np.nan)
    j = f.token_layers.index(p.token_layer)
    q = linear_scores(f.tokens[:, j], p.token_weight, p.token_bias)
    total = np.bincount(f.token_row, q, minlength=n_rows)
    count = np.bincount(f.token_row, minlength=n_rows)
    with np.errstate(invalid="ignore", divide="ignore"):
        return total / count


def _auroc_ci(s: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    return bootstrap_ci(lambda a, b: auroc(a, b), s, y)


def risk_rows(p: HallucinationProbe, s: np.ndarray, y: np.ndarray,
              max_errors: tuple[float, ...]) -> list[dict[str, Any]]:
    out = []
    assert p.conformal_scores is not None and p.conformal_wrong is not None
    for a in max_errors:
        try:
            t = risk_threshold(p.conformal_scores, p.conformal_wrong, a)
        except UnattainableRisk as e:
            out.append({"max_error": a, "attainable": False, "lowest_bound": e.best})
            continue
        err, cov = achieved(s, y, t.threshold)
        out.append({"max_error": a, "attainable": True, "threshold": t.threshold,
                    "calibration_coverage": t.coverage, "achieved_error": err,
                    "coverage": cov,
                    "within_target": err is not None and err <= a + TARGET_RISK_GAP})
    return out


def evaluate_fold(p: HallucinationProbe, f: Features, y: np.ndarray,
                  max_errors: tuple[float, ...]) -> dict[str, Any]:
    s = prompt_scores(p, f)
    tok = token_mean_scores(p, f, len(y))
    has_tok = np.isfinite(tok)
    out: dict[str, Any] = {
        "questions": int(len(y)), "base_accuracy": float(1 - y.mean()),
        "auroc": auroc(s, y), "auroc_ci": _auroc_ci(s, y),
        "layer": p.layer, "pooling": p.pooling, "probe_type": p.probe_type,
        "risk": risk_rows(p, s, y, max_errors)}
    if has_tok.sum() >= 10:
        out["token_auroc"] = auroc(tok[has_tok], y[has_tok])
        out["token_auroc_ci"] = _auroc_ci(tok[has_tok], y[has_tok])
    out["meets_target"] = bool(out["auroc"] >= TARGET_AUROC)
    return out


def run_probe_loso(m, rows: list[dict[str, Any]], max_errors: tuple[float, ...] = MAX_ERRORS
                   ) -> dict[str, Any]:
    f = extract_features(m, rows, list(range(0, m.num_layers, 3)))
    fp = ModelFingerprint(m.model.config.architectures[0], m.hidden_size, m.num_layers)
    y = np.array([0.0 if r["correct"] else 1.0 for r in rows])
    groups = row_sources(rows)
    report: dict[str, Any] = {"questions": len(rows), "sources": {}}
    for g in sorted(set(groups.tolist())):
        test = groups == g
        train_rows = [r for r, t in zip(rows, test, strict=True) if not t]
        probe, train_report = fit_probe(subset(f, ~test), train_rows, fp, f"loso-{g}")
        report["sources"][g] = {**evaluate_fold(probe, subset(f, test), y[test], max_errors),
                                "trained_on": train_report["training_sources"],
                                "selection": probe.scores["selection"]}
    # in distribution, for comparison: trained on every source's train split (what
    # `vsteer probe train` ships), tested on each source's held-out entities
    split = np.array([r.get("split", "train") for r in rows])
    train = split == "train"
    probe, _ = fit_probe(subset(f, train), [r for r, t in zip(rows, train, strict=True) if t],
                         fp, "all-sources")
    report["in_distribution"] = {}
    for g in sorted(set(groups.tolist())):
        test = (groups == g) & ~train
        if test.any():
            report["in_distribution"][g] = evaluate_fold(probe, subset(f, test), y[test],
                                                         max_errors)
    return report
