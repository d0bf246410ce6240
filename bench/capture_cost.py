"""Cost of `control.capture`: output tokens/s with every request capturing its generated
tokens at one, four or all layers, against no capture, in one run.

Within each repeat the settings run back to back in a shuffled order; each is divided
by the no-capture result of the same repeat (median and IQR of those paired ratios).
The worker's step reports go to a real results listener (msgpack over ZeroMQ into the
server's result book), so transport is included; the server's base64/JSON encoding of
the final report is not.

    python bench/capture_cost.py [--enforce-eager] [--repeats 5] [--json out.json]
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


def layer_sets(num_layers: int) -> dict[str, list[int]]:
    mid = num_layers // 2
    return {"1 layer": [mid], "4 layers": [num_layers * k // 5 for k in range(1, 5)],
            "all layers": list(range(num_layers))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="default")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--positions", default="generated")
    ap.add_argument("--enforce-eager", action="store_true")
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--json", default=None, help="also write the results here")
    args = ap.parse_args()

    import torch
    from timing import device_name
    from vllm import LLM, SamplingParams

    from vsteer.engine_config import vsteer_additional_config
    from vsteer.model import resolve_model
    from vsteer.plugins import entry
    from vsteer.plugins.channel import ChannelListener, new_channel_address
    from vsteer.wire import WireSpec, encode

    listener = ChannelListener(new_channel_address())
    listener.export()
    llm = LLM(model=resolve_model(args.model), dtype=args.dtype, max_model_len=512,
              enforce_eager=args.enforce_eager, max_num_seqs=args.batch,
              additional_config=vsteer_additional_config(max_steer_slots=args.batch))
    rt = entry.runtime()
    sets = {"none": None, **layer_sets(rt.fingerprint.num_layers)}
    prompts = [f"Write a short story about a traveller number {i}." for i in range(64)]
    serial = iter(range(10**9))

    def run(layers: list[int] | None) -> float:
        params = []
        for _ in range(args.batch):
            extra = None
            if layers is not None:
                wire = json.dumps({"layers": layers, "positions": args.positions})
                extra = {"vsteer": encode(WireSpec(rid=f"cap{next(serial)}",
                                                   plugins={"capture": wire}))}
            params.append(SamplingParams(temperature=0.0, max_tokens=args.max_tokens,
                                         ignore_eos=True, extra_args=extra))
        t0 = time.perf_counter()
        outs = llm.generate(prompts[:args.batch], params, use_tqdm=False)
        dt = time.perf_counter() - t0
        return sum(len(o.outputs[0].token_ids) for o in outs) / dt

    for layers in sets.values():
        run(layers)  # warm-up: every path once
    tps: dict[str, list[float]] = {k: [] for k in sets}
    ratios: dict[str, list[float]] = {k: [] for k in sets}
    for _ in range(args.repeats):
        got = {k: run(sets[k]) for k in random.sample(list(sets), len(sets))}
        for k, t in got.items():
            tps[k].append(t)
            ratios[k].append(t / got["none"])
    captured = sum(len(r.extra.get("capture", [])) for r in
                   [listener.book.peek(f"cap{i}") for i in range(3)])
    listener.close()

    mode = "eager" if args.enforce_eager else "compiled"
    device = device_name(torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    print(f"\ncapture_cost on {device}, vLLM {mode}, {args.dtype}, batch {args.batch}, "
          f"{args.max_tokens} tokens/request, positions {args.positions}, "
          f"{args.repeats} repeats (step reports received for a sample: {captured})")
    print("| capture | tok/s (median) | ratio to no capture (median of paired) | IQR |")
    print("|---|---|---|---|")
    rows = []
    for k in sets:
        r = statistics.median(ratios[k])
        q1, _, q3 = statistics.quantiles(ratios[k], n=4)
        rows.append({"capture": k, "layers": sets[k], "tokens_per_s":
                     statistics.median(tps[k]), "ratio": r, "iqr": [q1, q3],
                     "ratios": ratios[k]})
        print(f"| {k} | {rows[-1]['tokens_per_s']:.1f} | {r:.3f} | {q1:.3f}–{q3:.3f} |")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"device": device, "mode": mode, "rows": rows}, fh, indent=2)


if __name__ == "__main__":
    main()
