"""Kernels against their references, and steer_apply against the memory roofline.

    python bench/kernels.py            # on a GPU: Triton kernels vs the eager references
    python bench/kernels.py --quick    # smaller shapes (also what CI runs on CPU)

On CUDA, steer_apply's effective bandwidth (hidden read + written once, plus each
distinct vector read once) is reported as a fraction of the measured device-to-device
copy bandwidth. On CPU the torch-cpu steering kernel is compared with the reference
(the Triton kernels need a GPU; the CPU runs them only under the interpreter, in tests).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from timing import device_name, median_seconds  # noqa: E402

import vsteer.kernels  # noqa: E402,F401
from vsteer.kernels.dispatch import backend  # noqa: E402
from vsteer.kernels.jobs_reference import KIND_SIGMOID, score_jobs_reference  # noqa: E402
from vsteer.kernels.steer_reference import OP_ADD, steer_apply_reference  # noqa: E402
from vsteer.plugins.job_table import JobTable  # noqa: E402


def copy_bandwidth(device: torch.device, nbytes: int) -> float:
    src = torch.empty(nbytes // 2, dtype=torch.bfloat16, device=device)
    dst = torch.empty_like(src)
    t = median_seconds(lambda: dst.copy_(src), device)
    return 2 * nbytes / t  # read + write


def steer_case(device, tokens, hidden, slots, layers, dtype):
    g = torch.Generator(device="cpu").manual_seed(0)
    vectors = torch.randn(slots + 1, layers, hidden, generator=g).to(dtype).to(device)
    vectors[0] = 0
    inv = (1.0 / vectors.float().norm(dim=-1).clamp_min(1e-6)).to(device)
    inv[0] = 0
    row_slot = torch.arange(1, slots + 1, dtype=torch.int32).unsqueeze(1).to(device)  # [S, 1]
    row_scale = torch.full((slots, 1), 0.5, device=device)
    row_op = torch.full((slots, 1), OP_ADD, dtype=torch.int32, device=device)
    token_row = torch.randint(0, slots, (tokens,), generator=g, dtype=torch.int32).to(device)
    hidden_t = torch.randn(tokens, hidden, generator=g).to(dtype).to(device)
    residual = torch.randn(tokens, hidden, generator=g).to(dtype).to(device)
    step = torch.tensor([tokens, 1, 1])
    return (hidden_t, residual, token_row, row_slot, row_scale, row_op, vectors, inv, step)


def jobs_case(device, tokens, hidden, dtype):
    """A decode step's job table: one per-token probe job per sequence at layer 0, in a
    table of the runtime's capacity (3 rows per sequence)."""
    g = torch.Generator(device="cpu").manual_seed(0)
    step = torch.zeros(4, dtype=torch.int64)
    jobs = JobTable(3 * tokens, 2, hidden, 2, 1, device, step)
    w = jobs.weight_row("probe", lambda: torch.randn(hidden, generator=g).numpy(), set())
    for t in range(tokens):
        jobs.add(0, t, t + 1, KIND_SIGMOID, w, bias=0.1)
    jobs.commit()
    h = torch.randn(tokens, hidden, generator=g).to(dtype).to(device)
    vectors = torch.zeros(1, 2, hidden, dtype=dtype, device=device)
    inv = torch.zeros(1, 2, device=device)
    return (h, h, jobs.jobs_i.device, jobs.jobs_f.device, jobs.coeff.device,
            jobs.layer_index.device, jobs.weights, jobs.acc, vectors, inv, jobs.out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    device = torch.device(args.device)
    gpu = device.type == "cuda"
    dtype = torch.bfloat16
    print(f"kernels on {device_name(device)} (torch {torch.__version__})\n")
    print("| op | shape | backend | backend ms | reference ms | speed-up | bandwidth |")
    print("|---|---|---|---|---|---|---|")

    shapes = [(4096, 4096), (8192, 4096)] if gpu and not args.quick else [(256, 576), (32, 576)]
    slots, layers = 256, 4
    bw_copy = copy_bandwidth(device, 1 << 30) if gpu else None
    for tokens, hidden in shapes:
        case = steer_case(device, tokens, hidden, slots, layers, dtype)
        impl = backend("steer_apply", device)
        h0 = case[0].clone()

        def run(fn, case=case, h0=h0):
            case[0].copy_(h0)
            fn(*case, 1)

        t_impl = median_seconds(lambda run=run, impl=impl: run(impl.fn), device)
        t_ref = median_seconds(lambda run=run: run(steer_apply_reference), device,
                               repeats=10)
        t_copy = median_seconds(lambda case=case, h0=h0: case[0].copy_(h0), device)
        t_impl = max(t_impl - t_copy, 1e-9)  # the timed closure also restores hidden
        t_ref = max(t_ref - t_copy, 1e-9)
        moved = 2 * tokens * hidden * 2 + min(slots, tokens) * hidden * 2
        bw = f"{moved / t_impl / 1e9:.0f} GB/s"
        if bw_copy:
            bw += f" = {100 * moved / t_impl / bw_copy:.0f}% of copy ({bw_copy / 1e9:.0f} GB/s)"
        print(f"| steer_apply add | T={tokens} H={hidden}, {slots} vectors | {impl.name} | "
              f"{t_impl * 1e3:.3f} | {t_ref * 1e3:.3f} | {t_ref / t_impl:.1f}x | {bw} |")

    tokens, hidden = (256, 4096) if gpu and not args.quick else (32, 576)
    case = jobs_case(device, tokens, hidden, dtype)
    impl = backend("score_jobs", device)
    for layer, what in ((0, f"{tokens} per-token jobs at this layer"),
                        (1, "no job at this layer")):
        t_impl = median_seconds(lambda layer=layer: impl.fn(*case, layer), device)
        t_ref = median_seconds(lambda layer=layer: score_jobs_reference(*case, layer), device,
                               repeats=5)
        print(f"| score_jobs, table of {3 * tokens} rows | T={tokens} H={hidden}, {what} | "
              f"{impl.name} | {t_impl * 1e3:.3f} | {t_ref * 1e3:.3f} | {t_ref / t_impl:.1f}x | |")
    idle = torch.zeros(4, dtype=torch.int64)  # a step record saying: no job rows
    t_op = median_seconds(lambda: torch.ops.vsteer.score_jobs(*case, idle, 1), device)
    print(f"| score_jobs via torch.ops, step without jobs | T={tokens} H={hidden} | "
          f"{impl.name} | {t_op * 1e3:.4f} | | | |")


if __name__ == "__main__":
    main()
