"""Steering overhead on vLLM: output tokens/s with 0/50/100% of requests steered.

Each steered request has its own random vector on every layer. Within each repeat the
fractions of one batch size run back to back in a shuffled order, and each steered
result is divided by the unsteered result of the same repeat and batch size; the
median and interquartile range of those paired ratios are reported (run-to-run noise
on shared 2-core machines is ±15-25%, so single timings mean nothing).

    python bench/steer_overhead.py [--enforce-eager] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).parent))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="default")
    ap.add_argument("--batches", default="8,32")
    ap.add_argument("--fractions", default="0,0.5,1")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--scale", type=float, default=0.5)
    ap.add_argument("--enforce-eager", action="store_true")
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--json", default=None, help="also write the results here")
    args = ap.parse_args()

    import torch
    from random_vectors import random_steer_specs
    from timing import device_name
    from vllm import LLM, SamplingParams

    from vsteer.engine_config import vsteer_additional_config
    from vsteer.model import resolve_model
    from vsteer.plugins import entry

    batches = [int(b) for b in args.batches.split(",")]
    fractions = [float(f) for f in args.fractions.split(",")]
    llm = LLM(model=resolve_model(args.model), dtype=args.dtype, max_model_len=512,
              enforce_eager=args.enforce_eager, max_num_seqs=max(batches),
              additional_config=vsteer_additional_config(max_steer_slots=max(batches)))
    rt = entry.runtime()
    specs = random_steer_specs(rt.fingerprint, max(batches), args.scale)
    prompts = [f"Write a short story about a traveller number {i}." for i in range(64)]

    def run(batch: int, fraction: float) -> tuple[float, float]:
        n_steered = round(batch * fraction)
        params = [SamplingParams(temperature=0.0, max_tokens=args.max_tokens, ignore_eos=True,
                                 extra_args={"vsteer": specs[i]} if i < n_steered else None)
                  for i in range(batch)]
        c0, t0 = rt.control_seconds, time.perf_counter()
        outs = llm.generate(prompts[:batch], params, use_tqdm=False)
        dt = time.perf_counter() - t0
        tokens = sum(len(o.outputs[0].token_ids) for o in outs)
        return tokens / dt, (rt.control_seconds - c0) / dt

    run(batches[0], 1.0)  # warm-up: loads slots, touches every code path
    tps: dict[tuple[int, float], list[float]] = {}
    ratios: dict[tuple[int, float], list[float]] = {}
    host_share: dict[tuple[int, float], list[float]] = {}
    for _ in range(args.repeats):
        got = {}
        for b in batches:
            for f in random.sample(fractions, len(fractions)):
                got[(b, f)] = run(b, f)
        for (b, f), (t, share) in got.items():
            tps.setdefault((b, f), []).append(t)
            host_share.setdefault((b, f), []).append(share)
            ratios.setdefault((b, f), []).append(t / got[(b, 0.0)][0])

    mode = "eager" if args.enforce_eager else "compiled"
    device = device_name(torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    print(f"\nsteer_overhead on {device}, vLLM {mode}, {args.dtype}, "
          f"{args.max_tokens} tokens/request, {args.repeats} repeats, backend {rt.backend}")
    print("| batch | steered | tok/s (median) | ratio to unsteered (median of paired) | "
          "IQR of paired ratios | host planning share |")
    print("|---|---|---|---|---|---|")
    rows = []
    for b in batches:
        for f in fractions:
            r = statistics.median(ratios[(b, f)])
            q1, _, q3 = statistics.quantiles(ratios[(b, f)], n=4)
            row = {"batch": b, "steered_fraction": f, "iqr": [q1, q3],
                   "tokens_per_s": statistics.median(tps[(b, f)]), "ratio": r,
                   "ratios": ratios[(b, f)],
                   "host_planning_share": statistics.median(host_share[(b, f)])}
            rows.append(row)
            print(f"| {b} | {int(f * 100)}% | {row['tokens_per_s']:.1f} | {r:.3f} | "
                  f"{q1:.3f}–{q3:.3f} | {row['host_planning_share'] * 100:.2f}% |")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"device": device, "mode": mode, "rows": rows}, fh, indent=2)


if __name__ == "__main__":
    main()
