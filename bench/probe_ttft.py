"""Time to first token with a pre-decoding hallucination probe on vs off (vLLM, CPU).

Each repeat takes 8 new held-out questions and runs them as one batch with
max_tokens=1 twice, probe on and probe off, in a shuffled order; the probe-on time is
divided by the probe-off time of the same repeat and questions. Prompts differ between
repeats, and the two runs of a repeat never share prefix-cache blocks (a probed
request carries its own cache salt), so every run prefills its prompts.

    python bench/probe_ttft.py --artifacts DIR --probe NAME [--repeats 30]
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

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).parent))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="default")
    ap.add_argument("--artifacts", type=Path, required=True)
    ap.add_argument("--probe", required=True)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--action", default="annotate")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--json", default=None, help="also write the results here")
    args = ap.parse_args()

    import torch
    from timing import device_name
    from vllm import SamplingParams

    from vsteer.chat import chat_text
    from vsteer.eval_engine import EvalEngine
    from vsteer.model import resolve_model
    from vsteer.probe.dataset import prompt_for
    from vsteer.probe.questions import build_questions
    from vsteer.wire import EXTRA_ARGS_KEY

    ev = EvalEngine(resolve_model(args.model), args.artifacts, args.dtype, max_model_len=512)
    questions = [q["question"] for q in build_questions() if q["split"] == "test"]
    random.Random(0).shuffle(questions)
    need = (args.repeats + 1) * args.batch
    if need > len(questions):
        raise SystemExit(f"{need} questions needed, {len(questions)} held out")
    control = {"hallucination": {"probe": args.probe, "action": args.action}}

    def run(texts: list[str], probed: bool) -> float:
        params = []
        for _ in texts:
            extra = None
            if probed:
                extra = {EXTRA_ARGS_KEY: ev.resolver.resolve(control).encoded()}
            params.append(SamplingParams(max_tokens=1, temperature=0.0, extra_args=extra))
        t0 = time.perf_counter()
        ev.llm.generate(texts, params, use_tqdm=False)
        return time.perf_counter() - t0

    try:
        batches = [[chat_text(ev.tok, prompt_for(q))
                    for q in questions[i * args.batch:(i + 1) * args.batch]]
                   for i in range(args.repeats + 1)]
        run(batches[0], True)  # warm-up: loads the probe, touches both paths
        run(batches[0], False)
        on, off, ratios = [], [], []
        for texts in batches[1:]:
            got = {}
            for probed in random.sample([True, False], 2):
                got[probed] = run(texts, probed)
            on.append(got[True])
            off.append(got[False])
            ratios.append(got[True] / got[False])
    finally:
        ev.close()
    q = statistics.quantiles(ratios, n=4)
    result = {"device": device_name(torch.device("cpu")), "batch": args.batch,
              "repeats": args.repeats, "action": args.action, "probe": args.probe,
              "ttft_off_ms": statistics.median(off) * 1e3,
              "ttft_on_ms": statistics.median(on) * 1e3,
              "ratio_median": statistics.median(ratios), "ratio_q1": q[0], "ratio_q3": q[2]}
    print("| batch | TTFT off (ms) | TTFT on (ms) | on/off ratio (median) | IQR |")
    print("|---|---|---|---|---|")
    print(f"| {args.batch} | {result['ttft_off_ms']:.1f} | {result['ttft_on_ms']:.1f} | "
          f"{result['ratio_median']:.3f} | {q[0]:.3f}–{q[2]:.3f} |")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
