"""What the `experts` control adds to one MoE router call: the router's own pick
(softmax top-k, renormalized: what vLLM's CPU router and Mixtral's run) against the
same pick wrapped by `expert_mask` and `expert_force`, as the control runs them, with
every token controlled (each with its own route slot: a quarter of the experts off, and
one forced or not) and with none (an idle step: CPU skips the ops on its host-side count).

    python bench/expert_route.py [--repeats 200]

Interleaved: each repeat times the plain pick and both wrapped variants back to back;
reported are medians of the per-repeat ratios to the plain pick, and the added time.
On CUDA the Triton kernels run (they ignore the host count, as graphs replay them).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from timing import device_name  # noqa: E402

import vsteer.kernels  # noqa: E402,F401
from vsteer.kernels.expert_route_reference import OFF  # noqa: E402

SHAPES = [(1, 8, 2), (32, 8, 2), (512, 8, 2), (1, 128, 8), (32, 128, 8), (512, 128, 8)]
LAYERS, SLOTS = 32, 64


def pick(logits: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    vals, idx = torch.topk(logits, k, dim=-1, sorted=False)
    return torch.softmax(vals, dim=-1).float(), idx.to(torch.int32)


def timed(fn, device: torch.device, calls: int = 20) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(calls):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / calls


def case(T: int, E: int, K: int, device: torch.device, repeats: int) -> dict:
    g = torch.Generator().manual_seed(T + E)
    logits = torch.randn(T, E, generator=g).to(device)
    route = torch.zeros(SLOTS, LAYERS, E)
    for s in range(SLOTS):
        off = torch.randperm(E, generator=g)[: max(1, E // 4) + 1]
        route[s, :, off[:-1]] = OFF
        route[s, :, off[-1]] = 0.5
    route_off = route.clamp(max=0.0).to(device)  # the same slots, nothing forced
    route = route.to(device)
    counts = torch.zeros(SLOTS, LAYERS, E, dtype=torch.int32, device=device)
    every = torch.arange(T, dtype=torch.int32) % SLOTS
    slots = {"all": every.to(device), "none": torch.full((T,), -1, dtype=torch.int32,
                                                           device=device)}
    active = {"all": torch.tensor([T]), "none": torch.tensor([0])}

    def wrapped(which: str, table: torch.Tensor):
        ts, act = slots[which], active[which]
        x = torch.ops.vsteer.expert_mask(logits, ts, table, act, 5)
        w, i = pick(x, K)
        return torch.ops.vsteer.expert_force(w, i, ts, table, counts, act, 5)

    fns = {"plain": lambda: pick(logits, K), "none": lambda: wrapped("none", route),
           "off": lambda: wrapped("all", route_off), "all": lambda: wrapped("all", route)}
    for f in fns.values():
        for _ in range(5):
            f()
    samples: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, f in fns.items():
            samples[k].append(timed(f, device))
    plain = samples["plain"]
    out = {"tokens": T, "experts": E, "top_k": K,
           "plain_us": statistics.median(plain) * 1e6}
    for k in ("none", "off", "all"):
        ratios = [a / b for a, b in zip(samples[k], plain, strict=True)]
        added = [a - b for a, b in zip(samples[k], plain, strict=True)]
        out[f"{k}_ratio"] = statistics.median(ratios)
        out[f"{k}_added_us"] = statistics.median(added) * 1e6
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=200)
    args = ap.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.set_num_threads(1)  # as vLLM pins a CPU worker
    print(f"device: {device_name(device)}; {LAYERS} layers, {SLOTS} route slots")
    print("| tokens | experts | top-k | router pick (µs) | idle: ratio / added µs | "
          "all controlled, off only | all controlled, off + force |")
    print("|---|---|---|---|---|---|---|")
    for T, E, K in SHAPES:
        r = case(T, E, K, device, args.repeats)
        cells = " | ".join(f"{r[f'{k}_ratio']:.2f} / {r[f'{k}_added_us']:.1f}"
                           for k in ("none", "off", "all"))
        print(f"| {T} | {E} | {K} | {r['plain_us']:.1f} | {cells} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
