"""`vsteer eval refusal`: refusal rates of base / force / guard / controller / ablate
on held-out prompts, through the real serving path (vLLM engine + vsteer runtime,
controls resolved exactly as the server resolves them).

Writes report.json ({"modes": {mode: {harmful_refusal_rate, harmless_refusal_rate,
...}}}), report.md, refusal_rates.png and completions.jsonl into --out.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from vsteer.eval_engine import EvalEngine
from vsteer.refusal.judge import JUDGE_CHARS, REFUSAL_PHRASES, is_refusal

MAX_TOKENS = 48


class RefusalEval(EvalEngine):
    def run(self, prompts: list[str], refusal: dict[str, Any] | None, desc: str
            ) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        decides = refusal is not None and refusal.get("mode") in ("guard", "controller")
        for a in self.answer(prompts, {"refusal": refusal} if refusal else None, MAX_TOKENS,
                             desc, reports=decides):
            row = {"prompt": a.prompt, "completion": a.completion}
            if decides:  # the decision as the server reports it
                rep = a.control["refusal"]
                row["triggered"], row["score"] = rep["triggered"], rep["score"]
            row["refused"] = is_refusal(a.completion)
            rows.append(row)
        return rows


def modes_for(direction: str, calibrated: bool, controller: str | None
              ) -> dict[str, dict[str, Any] | None]:
    modes: dict[str, dict[str, Any] | None] = {
        "base": None, "force": {"mode": "force", "direction": direction}}
    if calibrated:
        modes["guard"] = {"mode": "guard", "direction": direction}
    if controller:
        modes["controller"] = {"mode": "controller", "direction": direction,
                               "controller": controller}
    modes["ablate"] = {"mode": "ablate", "direction": direction}
    return modes


def summarize(rows: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    def rate(rs: list[dict[str, Any]], key: str) -> float | None:
        vals = [r[key] for r in rs if r.get(key) is not None]
        return sum(map(bool, vals)) / len(vals) if vals else None

    out = {"harmful_refusal_rate": rate(rows["harmful"], "refused"),
           "harmless_refusal_rate": rate(rows["harmless"], "refused")}
    trig_h, trig_s = rate(rows["harmful"], "triggered"), rate(rows["harmless"], "triggered")
    if trig_h is not None:
        out.update({"harmful_triggered_rate": trig_h, "harmless_triggered_rate": trig_s})
    return out


def write_report(out: Path, report: dict[str, Any], samples: list[dict[str, Any]]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    with open(out / "completions.jsonl", "w") as f:
        for s in samples:
            f.write(json.dumps(s) + "\n")
    lines = ["| mode | harmful refusal | harmless refusal | harmful − harmless |",
             "|---|---|---|---|"]
    for mode, m in report["modes"].items():
        h, s = m["harmful_refusal_rate"], m["harmless_refusal_rate"]
        lines.append(f"| {mode} | {h:.1%} | {s:.1%} | {h - s:+.1%} |")
    sizes = report["sizes"]
    lines += ["", f"Held-out prompts: {sizes['harmful']} harmful, {sizes['harmless']} harmless. "
              f"Greedy, {MAX_TOKENS} tokens. Refusal = one of {len(REFUSAL_PHRASES)} phrases in "
              f"the first {JUDGE_CHARS} characters (vsteer/refusal/judge.py)."]
    (out / "report.md").write_text("\n".join(lines) + "\n")
    _plot(out / "refusal_rates.png", report)


def _plot(path: Path, report: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    modes = list(report["modes"])
    h = [report["modes"][m]["harmful_refusal_rate"] * 100 for m in modes]
    s = [report["modes"][m]["harmless_refusal_rate"] * 100 for m in modes]
    x = range(len(modes))
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.bar([i - 0.2 for i in x], h, 0.4, label="harmful", color="#c0392b")
    ax.bar([i + 0.2 for i in x], s, 0.4, label="harmless", color="#2980b9")
    ax.set_xticks(list(x), modes)
    ax.set_ylabel("refusal rate (%)")
    ax.set_ylim(0, 100)
    ax.set_title(f"Refusal on held-out prompts ({report['model_name']}, "
                 f"direction {report['direction']})")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
