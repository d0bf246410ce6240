"""CUDA-graph capture and replay of vsteer's per-layer ops with new table contents.

    python bench/graph_replay.py              # GPU: capture once, replay 4 different steps
    python bench/graph_replay.py --device cpu # the same steps as plain calls (smoke run)

One "layer" (steer_apply, then score_jobs) is captured once with torch.cuda.graph over
the runtime's own preallocated tables (TokenPlan, JobTable, a slot table). Each step
then writes new host rows (other tokens steered by other slots, other jobs at this
layer, a guard that fires and forces a slot, none at all), uploads them the way the
runtime does, replays the graph, and compares hidden, scores and slots with the
plain-torch references run on copies. Prints one line per step and exits 1 on any
mismatch: what CUDA graphs need from vsteer is that nothing the ops read is baked
into the capture.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import torch

import vsteer.kernels  # noqa: F401  (registers torch.ops.vsteer.*)
from vsteer.kernels.jobs_reference import KIND_COS, KIND_SIGMOID, score_jobs_reference
from vsteer.kernels.steer_reference import OP_ABLATE, OP_ADD, steer_apply_reference
from vsteer.plugins.job_table import JobTable
from vsteer.plugins.token_plan import TokenPlan

LAYER, LAYERS, SLOTS = 1, 4, 8


class Tables:
    """The runtime's tables at test size, on `device`."""

    def __init__(self, tokens: int, hidden: int, device: torch.device, dtype: torch.dtype):
        g = torch.Generator().manual_seed(0)
        self.plan = TokenPlan(tokens, 8, 4, device)
        self.jobs = JobTable(3 * tokens, LAYERS, hidden, 4, 2, device, self.plan.step)
        vectors = torch.randn(SLOTS, LAYERS, hidden, generator=g) * 0.5
        vectors[0] = 0  # slot 0: the no-op
        self.vectors = vectors.to(dtype).to(device)  # [S, L, H]
        inv = 1.0 / vectors.float().norm(dim=-1).clamp_min(1e-6)
        inv[0] = 0
        self.inv = inv.to(device)  # [S, L]
        for k in range(4):
            w = torch.randn(hidden, generator=g).numpy()
            self.jobs.weight_row(f"w{k}", lambda w=w: w / np.linalg.norm(w), set())
        self.hidden = torch.randn(tokens, hidden, generator=g).to(dtype).to(device)
        self.residual = torch.randn(tokens, hidden, generator=g).to(dtype).to(device)

    def layer(self, hidden: torch.Tensor) -> None:
        p, j = self.plan, self.jobs
        torch.ops.vsteer.steer_apply(hidden, self.residual, p.token_row.device,
                                     p.row_slot.device, p.row_scale.device, p.row_op.device,
                                     self.vectors, self.inv, p.step, LAYER)
        torch.ops.vsteer.score_jobs(hidden, self.residual, j.jobs_i.device, j.jobs_f.device,
                                    j.coeff.device, j.layer_index.device, j.weights, j.acc,
                                    self.vectors, self.inv, j.out, p.step, LAYER)

    def reference(self, hidden: torch.Tensor, vectors: torch.Tensor, inv: torch.Tensor,
                  out: torch.Tensor) -> None:
        p, j = self.plan, self.jobs
        step = torch.tensor([max(p.num_active, 1), 0, 0])
        steer_apply_reference(hidden, self.residual, p.token_row.device, p.row_slot.device,
                              p.row_scale.device, p.row_op.device, vectors, inv, step, LAYER)
        n = j.num_jobs
        score_jobs_reference(hidden, self.residual, j.jobs_i.device[:n], j.jobs_f.device[:n],
                             j.coeff.device[:n], j.layer_index.device, j.weights, j.acc.clone(),
                             vectors, inv, out[:n], LAYER)


def plan_step(t: Tables, case: int, tokens: int) -> list[int]:
    """Step `case`: different tokens, slots, ops and jobs each time. Returns the plan
    rows it took (given back after the step)."""
    p, j = t.plan, t.jobs
    p.begin(tokens)
    rows: list[int] = []
    if case == 0:  # two requests steered by two vectors, per-token jobs
        a = p.alloc_row([(1, 1.0, OP_ADD)])
        b = p.alloc_row([(2, -0.5, OP_ADD), (3, 1.0, OP_ABLATE)])
        rows += [a, b]
        p.assign(0, tokens // 2, a)
        p.assign(tokens // 2, tokens, b)
        for k in range(tokens):
            j.add(LAYER, k, k + 1, KIND_SIGMOID, k % 4, bias=0.1)
    elif case == 1:  # one token steered, one guard that fires and forces slot 5 <- 4
        a = p.alloc_row([(4, 2.0, OP_ADD)])
        rows.append(a)
        p.assign(tokens - 1, tokens, a)
        j.add(LAYER, tokens - 1, tokens, KIND_COS, 0, threshold=-1.0,
              force=(4, 5, {LAYER + 1: 1.5, LAYER + 2: -1.0}))
    elif case == 2:  # jobs at another layer only, nothing steered
        for k in range(3):
            j.add(LAYER + 1, k, k + 1, KIND_SIGMOID, 1)
    # case 3: an idle step
    p.commit(tokens)
    j.commit()
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--hidden", type=int, default=4096)
    ap.add_argument("--dtype", default="bfloat16")
    args = ap.parse_args()
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    t = Tables(args.tokens, args.hidden, device, dtype)
    static = t.hidden.clone()  # the graph's input buffer, refilled before each replay
    graph = None
    if device.type == "cuda":
        plan_step(t, 3, args.tokens)  # capture over an idle step's tables
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            t.layer(static)  # warm-up: Triton compiles outside the capture
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            t.layer(static)
        t.jobs.finish()
        t.plan.reset()
    failures = 0
    for case in range(4):
        rows = plan_step(t, case, args.tokens)
        want_h, want_v, want_i = t.hidden.clone(), t.vectors.clone(), t.inv.clone()
        want_out = t.jobs.out.clone()
        t.reference(want_h, want_v, want_i, want_out)
        static.copy_(t.hidden)
        if graph is not None:
            graph.replay()
            torch.cuda.synchronize()
        else:
            t.layer(static)
        n = t.jobs.num_jobs
        ok = (torch.allclose(static.float(), want_h.float(), atol=2e-2, rtol=2e-2)
              # rows of jobs at other layers stay NaN (not scored) on both sides
              and torch.allclose(t.jobs.out[:n], want_out[:n], atol=1e-3, equal_nan=True)
              and torch.allclose(t.vectors.float(), want_v.float(), atol=2e-2)
              and torch.allclose(t.inv, want_i, rtol=1e-4))
        failures += not ok
        print(f"step {case}: {t.plan.num_active} tokens steered, {n} jobs, "
              f"{'replayed' if graph is not None else 'called'}: {'ok' if ok else 'MISMATCH'}")
        t.jobs.out.zero_()
        t.jobs.finish()  # rows inactive on the device, as after every engine step
        t.plan.reset()
        for r in rows:
            t.plan.free_row(r)
    print("graph replay with new table contents:", "FAILED" if failures else "all equal")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
