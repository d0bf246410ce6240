"""report.json, report.md, loso_gain.png and completions.jsonl for `--loso`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from vsteer.ci_bars import Bar, grouped_ci_bars
from vsteer.refusal.judge import JUDGE_CHARS
from vsteer.refusal.loso import TARGET_HARMFUL_GAIN, TARGET_HARMLESS_GAIN


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{x:.1%}"


def _gain(part: dict[str, Any] | None) -> str:
    if part is None:
        return "—"
    lo, hi = part["gain_ci"]
    return f"{part['gain'] * 100:+.1f} [{lo * 100:+.1f}, {hi * 100:+.1f}]"


def _table(report: dict[str, Any], mode: str) -> list[str]:
    lines = [
        f"| held-out source | harmful n | base → {mode} | gain, points [95% CI] | "
        f"harmless n | base → {mode} | gain, points [95% CI] | target |",
        "|---|---|---|---|---|---|---|---|"]
    for name, r in report["sources"].items():
        part = r if mode == "guard" else r[mode]
        cells = [name]
        for kind in ("harmful", "harmless"):
            x = part.get(kind)
            cells += [str(x["prompts"] if x else 0),
                      f"{_pct(x and x['base_refusal'])} → {_pct(x and x['controlled_refusal'])}",
                      _gain(x)]
        cells.append("met" if part["meets_target"] else "missed")
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def markdown(report: dict[str, Any]) -> str:
    lines = ["Guard:", "", *_table(report, "guard"), "",
             "Guard layer and threshold per fold: " + ", ".join(
                 f"{n} {r['condition_layer']}/{r['threshold']:.3f}"
                 for n, r in report["sources"].items()) + "."]
    if "controller" in report.get("modes", []):
        lines += ["", f"Controller `{report['controller']}` (gate recalibrated per fold):", "",
                  *_table(report, "controller")]
    lines += [
        "", f"Each row: the guard fit on every other source (FPR target {report['max_fpr']:.0%} "
        f"on held-out harmless prompts, rule `{report['fpr_rule']}`), tested on the source "
        f"left out. Force layer {report['force_layer']} and force vector from direction "
        f"`{report['direction']}`. Greedy, 48 tokens; refusal = phrase match in the first "
        f"{JUDGE_CHARS} characters. Target per source: harmful ≥ "
        f"+{TARGET_HARMFUL_GAIN * 100:.0f} points, harmless ≤ +{TARGET_HARMLESS_GAIN * 100:.0f}.",
        "", "Offline trigger rates (transformers states, harmful / harmless) by FPR rule:", "",
        "| held-out source | " + " | ".join(report["offline_triggers"]) + " |",
        "|---|" + "---|" * len(report["offline_triggers"])]
    for name in report["sources"]:
        cells = []
        for rule in report["offline_triggers"]:
            t = report["offline_triggers"][rule][name]
            cells.append(f"{_pct(t['harmful'])} / {_pct(t['harmless'])}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_loso_report(out: Path, report: dict[str, Any]) -> None:
    samples = report.pop("_samples", [])
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    with open(out / "completions.jsonl", "w") as f:
        for s in samples:
            f.write(json.dumps(s) + "\n")
    (out / "report.md").write_text(markdown(report))
    _plot(out / "loso_gain.png", report)


def _plot(path: Path, report: dict[str, Any]) -> None:
    import matplotlib.pyplot as plt

    names = list(report["sources"])

    def bars(kind: str) -> list[Bar]:
        parts = [report["sources"][n].get(kind) for n in names]
        return [None if p is None else (p["gain"] * 100, p["gain_ci"][0] * 100,
                                        p["gain_ci"][1] * 100) for p in parts]

    fig, ax = grouped_ci_bars(names, [("harmful", "#c0392b", bars("harmful")),
                                      ("harmless", "#2980b9", bars("harmless"))])
    ax.axhline(TARGET_HARMFUL_GAIN * 100, color="#c0392b", ls=":", lw=1)
    ax.axhline(TARGET_HARMLESS_GAIN * 100, color="#2980b9", ls=":", lw=1)
    ax.set_ylabel("refusal gain over base (points)")
    ax.set_title("Refusal guard, left-one-source-out (95% bootstrap CI)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
