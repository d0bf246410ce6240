"""Registers, spills and shared memory of every Triton kernel compiled for GPU targets.

    python bench/triton_compile.py                       # sm_80 + sm_90, all dtypes and sizes
    python bench/triton_compile.py --dtype bf16 --hidden 4096

Runs on CPU, no GPU: Triton's compiler and its bundled ptxas, for what the wrappers
launch (kernels/gpu_compile.py; tests/test_triton_compile.py compiles the same grid).
The numbers are compiler outputs (ptxas's report and Triton's metadata), not run times.
Spills are bytes of spill stores / loads per thread; shared memory is bytes per block.
"""

from __future__ import annotations

import argparse
import time
import warnings

import triton

from vsteer.kernels.gpu_compile import (
    DTYPES,
    HIDDEN_SIZES,
    TARGETS,
    compile_launch,
    launches,
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dtype", choices=DTYPES, action="append")
    ap.add_argument("--hidden", type=int, action="append")
    ap.add_argument("--target", type=int, choices=TARGETS, action="append")
    args = ap.parse_args()
    dtypes, hiddens = args.dtype or DTYPES, args.hidden or HIDDEN_SIZES
    targets = args.target or TARGETS
    warnings.filterwarnings("ignore", message="TRITON_DEFAULT_FP_FUSION is unset")

    rows = [(launch, dt, str(h)) for dt in dtypes for h in hiddens
            for launch in launches(dt, h)]
    rows.sort(key=lambda r: r[0].kernel)
    head = "| kernel | launch | dtype | H |" + "".join(
        f" sm_{cc} regs | sm_{cc} spills st/ld B | sm_{cc} smem B |" for cc in targets)
    print(f"triton {triton.__version__}; compiler outputs, not GPU run times\n")
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    t0 = time.perf_counter()
    for launch, dt, h in rows:
        cells = []
        for cc in targets:
            c = compile_launch(launch, cc)
            cells += [str(c.registers), f"{c.spill_stores}/{c.spill_loads}", str(c.shared)]
        flags = launch.label[len(launch.kernel) + 1 : -1]
        print(f"| {launch.kernel} | {flags} | {dt} | {h} | " + " | ".join(cells) + " |")
    print(f"\n{len(rows) * len(targets)} compiles in {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
