"""Decode-step overhead of vsteer's controls in a CUDA-graph-captured decoder stack.

    python bench/decode_overhead.py           # GPU: 8B-shaped stack, CUDA graphs
    python bench/decode_overhead.py --tiny    # CPU smoke run of the same code (no graph)

The stack is Llama-3-8B-shaped (32 layers, hidden 4096, GQA 32/8 heads of 128, MLP
14336, bf16) decoding one token for each of 256 sequences against a KV cache. The
controlled step runs what vsteer's runtime runs in a compiled engine: after every
layer steer_apply (256 distinct vectors, one per sequence) and score_jobs over the
full job table (3 rows per sequence), which holds a per-token probe job for every
sequence at the middle layer; the plain step runs neither.
Both are captured as CUDA graphs and replayed; the ratio of median replay times is
the overhead. The vLLM (hidden, residual) pair convention is kept.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
from timing import device_name, median_seconds  # noqa: E402

import vsteer.kernels  # noqa: E402,F401
from vsteer.kernels.dispatch import backend  # noqa: E402
from vsteer.kernels.jobs_reference import KIND_SIGMOID  # noqa: E402
from vsteer.kernels.steer_reference import OP_ADD  # noqa: E402
from vsteer.plugins.job_table import JobTable  # noqa: E402


@dataclass
class Shape:
    layers: int = 32
    hidden: int = 4096
    heads: int = 32
    kv_heads: int = 8
    mlp: int = 14336
    batch: int = 256
    context: int = 256


TINY = Shape(layers=2, hidden=256, heads=4, kv_heads=2, mlp=512, batch=8, context=16)


def rms(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    return x * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + 1e-5).to(x.dtype) * w


class Stack:
    def __init__(self, s: Shape, device: torch.device, dtype: torch.dtype) -> None:
        self.s = s
        hd = s.hidden // s.heads
        g = torch.Generator(device="cpu").manual_seed(0)

        def w(*shape):
            return (torch.randn(*shape, generator=g) / shape[0] ** 0.5).to(dtype).to(device)

        self.layers = [dict(n1=torch.ones(s.hidden, dtype=dtype, device=device),
                            n2=torch.ones(s.hidden, dtype=dtype, device=device),
                            qkv=w(s.hidden, (s.heads + 2 * s.kv_heads) * hd),
                            o=w(s.heads * hd, s.hidden), up=w(s.hidden, 2 * s.mlp),
                            down=w(s.mlp, s.hidden)) for _ in range(s.layers)]
        self.k = torch.randn(s.layers, s.batch, s.kv_heads, s.context, hd, generator=g).to(
            dtype).to(device)
        self.v = torch.randn_like(self.k)
        self.x = torch.randn(s.batch, s.hidden, generator=g).to(dtype).to(device)
        self.hd = hd
        # controls: one vector (slot) and one row per sequence, on every layer
        slots = s.batch
        self.vectors = (torch.randn(slots + 1, s.layers, s.hidden, generator=g) * 0.01).to(
            dtype).to(device)
        self.vectors[0] = 0
        self.inv = (1 / self.vectors.float().norm(dim=-1).clamp_min(1e-6)).to(device)
        self.inv[0] = 0
        self.token_row = torch.arange(s.batch, dtype=torch.int32, device=device)
        self.row_slot = torch.arange(1, slots + 1, dtype=torch.int32, device=device)[:, None]
        self.row_scale = torch.ones(slots, 1, device=device)
        self.row_op = torch.full((slots, 1), OP_ADD, dtype=torch.int32, device=device)
        self.step = torch.tensor([s.batch, 1, 1, 0])
        self.jobs = JobTable(3 * s.batch, s.layers, s.hidden, 2 * s.batch, s.batch, device,
                             self.step)
        probe = self.jobs.weight_row("probe", lambda: torch.randn(s.hidden, generator=g)
                                     .numpy() / s.hidden**0.5, set())
        for t in range(s.batch):  # each sequence's per-token probe score
            self.jobs.add(s.layers // 2, t, t + 1, KIND_SIGMOID, probe, bias=0.1)
        self.jobs.commit()

    def forward(self, controls: bool) -> torch.Tensor:
        s, hd = self.s, self.hd
        hidden, residual = self.x, torch.zeros_like(self.x)
        for i, p in enumerate(self.layers):
            residual = hidden + residual
            h = rms(residual, p["n1"])
            q, k, v = (h @ p["qkv"]).split([s.heads * hd, s.kv_heads * hd, s.kv_heads * hd], -1)
            q = q.view(s.batch, s.heads, 1, hd)
            kc = torch.cat([self.k[i], k.view(s.batch, s.kv_heads, 1, hd)], dim=2)
            vc = torch.cat([self.v[i], v.view(s.batch, s.kv_heads, 1, hd)], dim=2)
            a = F.scaled_dot_product_attention(q, kc, vc, enable_gqa=True)
            residual = a.reshape(s.batch, -1) @ p["o"] + residual
            h = rms(residual, p["n2"])
            gate, up = (h @ p["up"]).chunk(2, dim=-1)
            hidden = (F.silu(gate) * up) @ p["down"]
            if controls:
                torch.ops.vsteer.steer_apply(hidden, residual, self.token_row, self.row_slot,
                                             self.row_scale, self.row_op, self.vectors,
                                             self.inv, self.step, i)
                j = self.jobs
                torch.ops.vsteer.score_jobs(hidden, residual, j.jobs_i.device, j.jobs_f.device,
                                            j.coeff.device, j.layer_index.device, j.weights,
                                            j.acc, self.vectors,
                                            self.inv, j.out, self.step, i)
        return hidden + residual


def timed(stack: Stack, controls: bool, device: torch.device, graphs: bool) -> float:
    if not graphs:
        return median_seconds(lambda: stack.forward(controls), device, repeats=10, warmup=2)
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):
            stack.forward(controls)  # warm-up (Triton compiles here, outside the graph)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        stack.forward(controls)
    return median_seconds(graph.replay, device, repeats=50, warmup=5)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiny", action="store_true", help="small shapes (CPU smoke run)")
    args = ap.parse_args()
    gpu = torch.cuda.is_available() and not args.tiny
    device = torch.device("cuda" if gpu else "cpu")
    shape = Shape() if gpu else TINY
    stack = Stack(shape, device, torch.bfloat16)
    with torch.inference_mode():
        plain = timed(stack, False, device, graphs=gpu)
        controlled = timed(stack, True, device, graphs=gpu)
    kind = "CUDA graphs" if gpu else "eager CPU smoke run, not a measurement"
    print(f"decode_overhead on {device_name(device)} ({kind}); steer backend "
          f"{backend('steer_apply', device).name}, job backend "
          f"{backend('score_jobs', device).name}")
    print(f"{shape.layers} layers, hidden {shape.hidden}, batch {shape.batch}, "
          f"{shape.batch} distinct vectors on all layers + job table on all layers "
          f"({shape.batch} per-token probe jobs)")
    print(f"plain step {plain * 1e3:.3f} ms, controlled step {controlled * 1e3:.3f} ms, "
          f"ratio {controlled / plain:.4f} (overhead {100 * (controlled / plain - 1):.2f}%)")


if __name__ == "__main__":
    main()
