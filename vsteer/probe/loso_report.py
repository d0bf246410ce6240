"""report.json, report.md and loso_auroc.png for `vsteer eval probe --loso`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from vsteer.ci_bars import Bar, grouped_ci_bars
from vsteer.probe.loso import TARGET_AUROC


def _ci(v: float, ci: tuple[float, float]) -> str:
    return f"{v:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]"


def _risk(r: dict[str, Any]) -> str:
    if not r["attainable"]:
        return f"n/a (bound ≥ {r['lowest_bound']:.2f})"
    err = "—" if r["achieved_error"] is None else f"{r['achieved_error']:.1%}"
    return f"{err} @ {r['coverage']:.0%}"


def markdown(report: dict[str, Any]) -> str:
    lines = ["Left one source out (trained on every other source):", "",
             *_table(report["sources"])]
    if report.get("in_distribution"):
        lines += ["", "In distribution (trained on every source's train split, tested on "
                  "each source's held-out entities):", "", *_table(report["in_distribution"])]
    lines += ["", "Target: AUROC ≥ "
              f"{TARGET_AUROC:.2f} on each left-out source; achieved error within 0.05 of "
              "max_error. `error @ coverage`: error among answered questions and the share "
              "answered; n/a: the calibration set cannot support that max_error."]
    return "\n".join(lines) + "\n"


def _table(sources: dict[str, Any]) -> list[str]:
    alphas = [r["max_error"] for r in next(iter(sources.values()))["risk"]]
    lines = ["| held-out source | questions | base accuracy | AUROC [95% CI] | "
             "per-token AUROC [95% CI] | layer, pooling | "
             + " | ".join(f"max_error {a:g}: error @ coverage" for a in alphas) + " |",
             "|---|---|---|---|---|---|" + "---|" * len(alphas)]
    for g, r in sources.items():
        tok = _ci(r["token_auroc"], r["token_auroc_ci"]) if "token_auroc" in r else "—"
        lines.append(f"| {g} | {r['questions']} | {r['base_accuracy']:.1%} | "
                     f"{_ci(r['auroc'], r['auroc_ci'])} | {tok} | {r['layer']}, {r['pooling']} | "
                     + " | ".join(_risk(x) for x in r["risk"]) + " |")
    return lines


def write_probe_loso_report(out: Path, report: dict[str, Any]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "report.md").write_text(markdown(report))
    _plot(out / "loso_auroc.png", report)


def _plot(path: Path, report: dict[str, Any]) -> None:
    import matplotlib.pyplot as plt

    names = list(report["sources"])

    def bars(key: str) -> list[Bar]:
        rs = [report["sources"][n] for n in names]
        return [(r[key], *r[f"{key}_ci"]) if key in r else None for r in rs]

    fig, ax = grouped_ci_bars(names, [("pre-decoding", "#8e44ad", bars("auroc")),
                                      ("per-token mean", "#16a085", bars("token_auroc"))])
    ax.axhline(TARGET_AUROC, color="black", ls=":", lw=1, label="target")
    ax.axhline(0.5, color="grey", lw=0.5)
    ax.set_ylim(0.3, 1.0)
    ax.set_ylabel("AUROC on the held-out source")
    ax.set_title("Hallucination probe, left-one-source-out (95% bootstrap CI)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
