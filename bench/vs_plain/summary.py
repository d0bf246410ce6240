"""From run results to paired ratios against plain vLLM, the markdown table and the
JSON record."""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from vs_plain.client import RunResult
from vs_plain.common import HERE
from vs_plain.configs import Config, Shape

TARGETS = {"bare": 0.99, "shared": 0.97, "distinct": 0.97}  # issue 15: ratio to plain vLLM


@dataclass
class Row:
    key: str
    label: str
    tok_s_median: float
    ratio_median: float
    ratio_q1: float
    ratio_q3: float
    failed: int
    target: float | None
    met: bool | None
    tok_s: list[float] = field(default_factory=list)
    ratios: list[float] = field(default_factory=list)


def quartiles(xs: list[float]) -> tuple[float, float]:
    if len(xs) < 2:
        return xs[0], xs[0]
    q = statistics.quantiles(xs, n=4, method="inclusive")
    return q[0], q[2]


def summarize(configs: list[Config], results: list[RunResult]) -> list[Row]:
    timed = [r for r in results if r.repeat >= 0]
    by = {(r.config, r.repeat): r for r in timed}
    repeats = sorted({r.repeat for r in timed})
    rows = []
    for c in configs:
        tok_s = [by[c.key, i].output_tok_s for i in repeats]
        ratios = [by[c.key, i].output_tok_s / by["plain", i].output_tok_s for i in repeats]
        q1, q3 = quartiles(ratios)
        med = statistics.median(ratios)
        target = TARGETS.get(c.key)
        rows.append(Row(c.key, c.label, statistics.median(tok_s), med, q1, q3,
                        sum(by[c.key, i].failed for i in repeats), target,
                        None if target is None else med >= target, tok_s, ratios))
    return rows


def markdown_table(rows: list[Row]) -> str:
    lines = ["| configuration | output tok/s (median) | ratio to plain vLLM (median of "
             "paired) | IQR of paired ratios | target | met | failed requests |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        target = "" if r.target is None else f"≥ {r.target:.2f}×"
        met = "" if r.met is None else ("yes" if r.met else "**no**")
        lines.append(f"| {r.label} | {r.tok_s_median:.1f} | {r.ratio_median:.3f} | "
                     f"{r.ratio_q1:.3f}–{r.ratio_q3:.3f} | {target} | {met} | {r.failed} |")
    return "\n".join(lines)


def machine() -> dict[str, Any]:
    sys.path.insert(0, str(HERE))
    import torch
    import vllm
    from timing import device_name

    return {"cpu": device_name(torch.device("cpu")), "torch": torch.__version__,
            "vllm": vllm.__version__, "python": sys.version.split()[0]}


def write_json(path: Path, args: argparse.Namespace, shape: Shape, rows: list[Row],
               results: list[RunResult], startup: dict[str, Any]) -> None:
    payload = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "machine": machine(), "shape": asdict(shape), "repeats": args.repeats,
        "seed": args.seed, "targets": TARGETS, **startup,
        "rows": [asdict(r) for r in rows], "runs": [asdict(r) for r in results],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2) + "\n")
