"""`vsteer eval probe`: the probe on held-out questions, through the real serving path
(vLLM engine + vsteer runtime, controls resolved as the server resolves them).

Three passes over the same questions (greedy):
    annotate (with per-token scores when the probe has them): answers, probe scores
        -> auroc, accuracy of the probe's verdict at the threshold, base accuracy,
           token_auroc (mean per-token score per answer)
    abstain:  abstention rate; accuracy of the answered questions (abstained ones count
              as not answered); the abstained set must equal score >= threshold
    mitigate: accuracy with the truth direction added when the probe fires
Writes report.json, report.md, roc.png, accuracy_vs_coverage.png, answers.jsonl.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from vsteer.eval_engine import EvalEngine
from vsteer.probe.dataset import MAX_TOKENS, load_questions, prompt_for
from vsteer.probe.match import is_correct
from vsteer.probe.metrics import auroc, roc_points
from vsteer.probe.train import plot_roc


def _pass(ev: EvalEngine, qs: list[dict[str, Any]], control: dict[str, Any], desc: str
          ) -> list[dict[str, Any]]:
    rows = []
    answers = ev.answer([prompt_for(q["question"]) for q in qs],
                        {"hallucination": control}, MAX_TOKENS, desc, reports=True)
    for q, a in zip(qs, answers, strict=True):
        msg = a.control["hallucination"]  # as the server reports it
        if msg["score"] is None:
            raise RuntimeError(f"no probe result for {q['question']!r}")
        tokens = msg.get("token_scores", [])
        rows.append({"question": q["question"], "family": q.get("family"),
                     "source": q.get("source", q.get("family")),
                     "completion": a.completion, "finish_reason": a.finish_reason,
                     "generated_tokens": len(a.token_ids),
                     "correct": is_correct(a.completion, q["answers"]),
                     "score": float(msg["score"]), "fired": bool(msg["triggered"]),
                     "token_scores": tokens})
    return rows


def _mean(xs: list[bool]) -> float | None:
    return float(np.mean(xs)) if xs else None


def summarize(base: list[dict[str, Any]], abstain: list[dict[str, Any]],
              mitigate: list[dict[str, Any]], threshold: float) -> dict[str, Any]:
    y = np.array([not r["correct"] for r in base])
    s = np.array([r["score"] for r in base])
    flagged = s >= threshold
    abst = [r["fired"] and r["generated_tokens"] <= 1 for r in abstain]
    answered = [r["correct"] for r, a in zip(abstain, abst, strict=True) if not a]
    out: dict[str, Any] = {
        "questions": len(base),
        "auroc": auroc(s, y),
        "threshold": threshold,
        "accuracy_at_threshold": float(np.mean(flagged == y)),
        "flagged_rate": float(flagged.mean()),
        "base_accuracy": float(np.mean(~y)),
        "abstain": {
            "abstention_rate": float(np.mean(abst)),
            "answered": len(answered),
            "answered_accuracy": _mean(answered),
            "accuracy_gain": (_mean(answered) or 0.0) - float(np.mean(~y)),
            "matches_annotate_scores": bool(np.array_equal(np.array(abst), flagged)),
        },
        "mitigate": {
            "accuracy": _mean([r["correct"] for r in mitigate]),
            "mitigated_rate": _mean([r["fired"] for r in mitigate]),
            "accuracy_on_flagged": _mean([r["correct"] for r in mitigate if r["fired"]]),
            "base_accuracy_on_flagged": _mean([r["correct"] for r, f in
                                               zip(base, flagged, strict=True) if f]),
        },
    }
    tok = [(np.mean(r["token_scores"]), not r["correct"]) for r in base if r["token_scores"]]
    if tok:
        out["token_auroc"] = auroc(np.array([t[0] for t in tok]), np.array([t[1] for t in tok]))
    return out


def by_source(base: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """AUROC (bootstrap CI) and base accuracy of each question source."""
    from vsteer.stats import bootstrap_ci

    out = {}
    for src in sorted({str(r["source"]) for r in base}):
        rs = [r for r in base if str(r["source"]) == src]
        y = np.array([not r["correct"] for r in rs])
        s = np.array([r["score"] for r in rs])
        out[src] = {"questions": len(rs), "base_accuracy": float(np.mean(~y)),
                    "auroc": auroc(s, y), "auroc_ci": bootstrap_ci(auroc, s, y)}
    return out


def run_probe_eval(model: str, artifacts: Path, probe: str, questions: Path, out: Path,
                   limit: int | None = None, dtype: str = "float32") -> dict[str, Any]:
    from vsteer.artifacts import ArtifactStore

    p = ArtifactStore(artifacts).get("probe", probe).value
    qs = [q for q in load_questions(questions) if q.get("split") == "test"]
    if limit:
        qs = qs[:limit]
    if not qs:
        raise SystemExit(f"{questions} has no held-out (split=test) questions")
    ev = EvalEngine(model, artifacts, dtype, max_model_len=512)
    try:
        base = _pass(ev, qs, {"probe": probe, "action": "annotate",
                              "per_token": p.has_token_probe}, "annotate")
        abst = _pass(ev, qs, {"probe": probe, "action": "abstain"}, "abstain")
        mit = _pass(ev, qs, {"probe": probe, "action": "mitigate"}, "mitigate")
    finally:
        ev.close()
    report = {"model_name": Path(model).name, "probe": probe, "layer": p.layer,
              "pooling": p.pooling, "probe_type": p.probe_type,
              "questions_file": str(questions), **summarize(base, abst, mit, p.threshold),
              "by_source": by_source(base),
              "trained_on": p.scores.get("training_sources")}
    write_report(out, report, {"annotate": base, "abstain": abst, "mitigate": mit})
    return report


def write_report(out: Path, report: dict[str, Any], passes: dict[str, list[dict[str, Any]]]
                 ) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    with open(out / "answers.jsonl", "w") as f:
        for mode, rows in passes.items():
            for r in rows:
                f.write(json.dumps({"mode": mode, **r}) + "\n")
    base = passes["annotate"]
    y = np.array([not r["correct"] for r in base])
    s = np.array([r["score"] for r in base])
    fpr, tpr, _ = roc_points(s, y)
    plot_roc(out / "roc.png", fpr.tolist(), tpr.tolist(),
             f"held-out ROC (AUROC {report['auroc']:.3f})")
    _plot_coverage(out / "accuracy_vs_coverage.png", s, ~y, report)
    a, m = report["abstain"], report["mitigate"]
    lines = [
        f"Held-out questions: {report['questions']}; probe {report['probe']} "
        f"({report['probe_type']}, {report['pooling']} pooling, layer {report['layer']}).",
        "", "| metric | value |", "|---|---|",
        f"| AUROC (pre-decoding) | {report['auroc']:.3f} |",
        f"| threshold | {report['threshold']:.3f} |",
        f"| probe verdict accuracy at threshold | {report['accuracy_at_threshold']:.1%} |",
        f"| base accuracy | {report['base_accuracy']:.1%} |",
        f"| abstain: abstention rate | {a['abstention_rate']:.1%} |",
        f"| abstain: accuracy of answered | {a['answered_accuracy']:.1%} |",
        f"| abstain: gain over base | {a['accuracy_gain']:+.1%} |",
        f"| mitigate: accuracy | {m['accuracy']:.1%} |",
    ]
    if "token_auroc" in report:
        lines.append(f"| per-token probe AUROC (mean score per answer) | "
                     f"{report['token_auroc']:.3f} |")
    lines += ["", "By source (held-out questions of each; the probe was trained on "
              f"{report.get('trained_on') or 'its training file'}):", "",
              "| source | questions | base accuracy | AUROC [95% CI] |", "|---|---|---|---|"]
    for src, r in report["by_source"].items():
        lo, hi = r["auroc_ci"]
        lines.append(f"| {src} | {r['questions']} | {r['base_accuracy']:.1%} | "
                     f"{r['auroc']:.3f} [{lo:.3f}, {hi:.3f}] |")
    (out / "report.md").write_text("\n".join(lines) + "\n")


def _plot_coverage(path: Path, scores: np.ndarray, correct: np.ndarray,
                   report: dict[str, Any]) -> None:
    """Accuracy of the answered questions against the share answered, abstaining on
    the highest scores first; the chosen threshold is marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    order = np.argsort(scores, kind="mergesort")  # most confident first
    acc = np.cumsum(correct[order]) / np.arange(1, len(order) + 1)
    cov = np.arange(1, len(order) + 1) / len(order)
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(cov, acc, label="answer the lowest-score questions")
    ax.axhline(report["base_accuracy"], color="grey", ls=":", label="base accuracy")
    keep = 1 - report["abstain"]["abstention_rate"]
    ax.axvline(keep, color="#c0392b", ls="--", label=f"threshold {report['threshold']:.2f}")
    ax.set_xlabel("coverage (share of questions answered)")
    ax.set_ylabel("accuracy of answered questions")
    ax.set_ylim(0, 1)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
