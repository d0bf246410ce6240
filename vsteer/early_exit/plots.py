"""Plots of exit-predictor training and early-exit benchmarks."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_train_report(out: Path, report: dict[str, Any]) -> None:
    """agreement_by_layer.png, calibration.png, cascade.png."""
    plt = _plt()
    rows = report["layers"]
    xs = [r["layer"] for r in rows]
    target = report["default_target"]
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    ax.plot(xs, [r["lens_agreement"] for r in rows], marker=".",
            label="logit-lens token == full model's")
    ax.plot(xs, [r["auroc"] for r in rows], marker="x", label="AUROC, linear predictor")
    ax.plot(xs, [r["softmax_auroc"] for r in rows], ls="--",
            label="AUROC, lens softmax max (costs an LM head)")
    ax.plot(xs, [r[f"coverage@{target}"] for r in rows], marker="s", ms=3,
            label=f"tokens exiting here at target {target}")
    ax.set_xlabel("exit layer")
    ax.set_ylim(0, 1.02)
    ax.set_title("Early exit: per-layer agreement and predictor quality (test tokens)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "agreement_by_layer.png", dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(4.8, 4.5))
    for la, pts in report["calibration"].items():
        ax.plot([p["predicted"] for p in pts], [p["observed"] for p in pts], marker="o",
                label=f"layer {la}")
    ax.plot([0, 1], [0, 1], color="grey", ls=":")
    ax.set_xlabel("predicted confidence (bin mean)")
    ax.set_ylabel("observed agreement")
    ax.set_title("Calibration of exit confidence (test)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "calibration.png", dpi=110)
    plt.close(fig)

    plot_tradeoff(out / "cascade.png", report["cascade"], "saved_fraction", "agreement",
                  "fraction of decoder-layer compute saved",
                  "Exit cascade on test tokens (teacher-forced)")


def plot_tradeoff(path: Path, curve: list[dict[str, Any]], x_key: str, y_key: str,
                  x_label: str, title: str) -> None:
    """y_key (an agreement) against x_key, each point labelled by its target/threshold."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 4.2))
    ax.plot([c[x_key] for c in curve], [c[y_key] for c in curve], marker="o")
    for c in curve:
        ax.annotate(str(c.get("target", c.get("target_agreement", c.get("threshold")))),
                    (c[x_key], c[y_key]), fontsize=7, xytext=(3, 3),
                    textcoords="offset points")
    ax.set_xlabel(x_label)
    ax.set_ylabel("token agreement with the full model")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
