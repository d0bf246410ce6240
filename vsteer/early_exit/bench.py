"""`vsteer bench early-exit`: decode speed and token agreement of exit mode against the
same engine without exit, in one run.

One eager fp32 engine. Each sweep point generates the same prompts greedily with
`control.early_exit = {"mode": "exit", ...}`, right after a baseline run without
control (machine speed drifts, so each point has its own reference). speedup =
generated tokens/s of the point over that of its baseline; token_agreement =
position-wise equality with the baseline's tokens, averaged over prompts (a missing or
extra token counts as a disagreement).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from vsteer.early_exit.corpus import read_corpus, shipped_prompts
from vsteer.early_exit.plots import plot_tradeoff
from vsteer.early_exit.summary import summarize_exits

DEFAULT_PROMPTS = 8


def token_agreement(base: list[list[int]], other: list[list[int]]) -> tuple[float, float]:
    """(position-wise agreement, fraction of each answer before the first difference),
    each averaged over prompts, against `base`'s lengths."""
    pos, prefix = [], []
    for b, o in zip(base, other, strict=True):
        n = max(len(b), 1)
        same = [i < len(o) and o[i] == t for i, t in enumerate(b)]
        pos.append(sum(same) / n if b else float(o == b))
        first = same.index(False) if False in same else len(b)
        prefix.append(first / n if b else float(o == b))
    return sum(pos) / len(pos), sum(prefix) / len(prefix)


def _timed(engine, prompts: list[str], control: dict[str, Any] | None, max_tokens: int,
           batch: int, desc: str) -> tuple[list[Any], float]:
    t0 = time.perf_counter()
    answers = engine.answer(prompts, control, max_tokens, desc, batch=batch)
    return answers, time.perf_counter() - t0


def run_exit_bench(model: str, artifacts: Path, predictor: str, prompts_file: Path | None,
                   out: Path, targets: list[float] | None, thresholds: list[float],
                   max_tokens: int, batch: int, limit: int | None, dtype: str
                   ) -> dict[str, Any]:
    from vsteer.eval_engine import EvalEngine

    rows = read_corpus(prompts_file) if prompts_file else shipped_prompts()[-DEFAULT_PROMPTS:]
    prompts = [r["prompt"] for r in rows if "prompt" in r][: limit or None]
    out.mkdir(parents=True, exist_ok=True)
    with EvalEngine(model, artifacts, dtype=dtype) as engine:
        pred = engine.resolver.store.get("exit", predictor).value
        n_layers = engine.fingerprint.num_layers
        points: list[dict[str, Any]] = (
            [{"target_agreement": t} for t in (targets or pred.targets)]
            + [{"threshold": t} for t in thresholds])
        _timed(engine, prompts[:2], None, 8, batch, "warm-up")
        base, _ = _timed(engine, prompts, None, max_tokens, batch, "baseline")
        base_ids = [a.token_ids for a in base]
        n_base = sum(map(len, base_ids))
        curve = []
        examples = []
        base_rates = []
        for point in points:
            control = {"early_exit": {"mode": "exit", "predictor": predictor, **point}}
            label = ", ".join(f"{k} {v}" for k, v in point.items())
            _, t_base = _timed(engine, prompts, None, max_tokens, batch, "baseline")
            base_rates.append(n_base / t_base)
            answers, t = _timed(engine, prompts, control, max_tokens, batch, f"exit {label}")
            ids = [a.token_ids for a in answers]
            records = [r for a in answers for r in engine.listener.wait_token_results(
                a.rid, "early_exit", len(a.token_ids), 2.0)]
            stats = summarize_exits(records, n_layers)
            agree, prefix = token_agreement(base_ids, ids)
            curve.append({**point, "tokens_per_s": sum(map(len, ids)) / t,
                          "speedup": sum(map(len, ids)) / t / base_rates[-1],
                          "token_agreement": agree, "prefix_agreement": prefix,
                          "exited_tokens": stats["exited_tokens"] / max(stats["tokens"], 1),
                          "saved_fraction": stats["saved_fraction"]})
            if not examples and agree < 1.0:
                i = next(i for i, (b, o) in enumerate(zip(base_ids, ids, strict=True)) if b != o)
                examples.append({"point": point, "prompt": prompts[i],
                                 "full": base[i].completion, "exit": answers[i].completion})
    default = next((c for c in curve if c.get("target_agreement") == pred.default_target),
                   curve[0])
    report = {
        "model": model, "predictor": predictor, "engine": f"vLLM eager, {dtype}",
        "prompts": len(prompts), "max_tokens": max_tokens, "batch": batch,
        "baseline_tokens_per_s": sum(base_rates) / len(base_rates),
        "baseline_spread": max(base_rates) / min(base_rates),
        "target": default.get("target_agreement", default.get("threshold")),
        "speedup": default["speedup"], "token_agreement": default["token_agreement"],
        "curve": curve, "examples": examples,
        "quality_notes": [
            "lossy mode: a decode step skips layers only when every token in it is "
            f"confident (batch {batch}); skipped layers' K/V come from the exit state",
            "token_agreement is position-wise against the same engine's full-depth greedy "
            "output; after a first difference the continuations usually differ",
            "baseline_spread = fastest / slowest baseline run: the machine's noise in "
            "this run; speedups within it are not distinguishable from 1",
        ],
    }
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    plot_tradeoff(out / "speedup_vs_agreement.png", curve, "speedup", "token_agreement",
                  "decode tokens/s, exit / full", "Early exit: speed against agreement")
    return report
