"""Compile every Triton kernel for real GPU targets on CPU, without a GPU (invariant 9).

`launches(dtype, hidden_size)` lists what the wrappers in *_triton.py launch for one
activation dtype and hidden size: every constexpr combination they can pass (taken from
each wrapper's own launch_config, so this cannot drift from a launch),
with argument types as the wrapper passes them. `compile_launch(launch, cc)` runs
Triton's compiler and its bundled ptxas for `GPUTarget("cuda", cc, 32)` and reads back
registers per thread and spills from ptxas's report, shared memory from the metadata.

Triton 3.9 sets `CompiledKernel.n_regs` / `n_spills` only when the binary is loaded on a
device (a CUDA driver call), and keeps no metadata equivalent; ptxas prints both
(`-v`), which TRITON_DUMP_PTXAS_LOG echoes to stdout. Each compile uses a fresh cache
directory, so ptxas always runs and its report is always there.

Arguments are specialized as a launch would specialize them: pointers 16-byte aligned
(`tt.divisibility` 16, as torch allocations are), an int divisible by 16 likewise (the
hidden size and row strides here), other ints plain i32. Representative values stand
in for the data-dependent ints (layer 5 of 30); a launch at layer 1, or at a layer
divisible by 16, compiles a specialized variant not listed here.
"""

from __future__ import annotations

import contextlib
import functools
import io
import re
import tempfile
from dataclasses import dataclass

import triton
from triton import knobs
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from vsteer.kernels import expert_route_triton, jobs_triton, steer_triton
from vsteer.wire import MAX_STEER_ENTRIES

TARGETS = (80, 90)  # sm_80 (A100), sm_90 (H100: Triton targets sm_90a)
DTYPES = ("fp16", "bf16", "fp32")  # activation dtypes; every wrapper accepts all three
HIDDEN_SIZES = (576, 4096, 8192)
LAYER, NUM_LAYERS = 5, 30  # representative data-dependent ints
# Largest shared memory one block may opt into (CUDA programming guide, compute
# capabilities table): 163 KiB on sm_80, 227 KiB on sm_90.
MAX_SHARED = {80: 163 * 1024, 90: 227 * 1024}
REGISTER_FILE = 64 * 1024  # 32-bit registers per SM on both


class Ptr(str):
    """A pointer argument of this element type, e.g. Ptr("bf16") -> "*bf16"."""


@dataclass(frozen=True)
class Launch:
    kernel: str  # short name for tables: steer, jobs
    fn: object  # the @triton.jit function
    args: tuple  # (name, Ptr | int | float) for each runtime argument, in order
    constexprs: tuple  # (name, value) pairs
    num_warps: int

    @property
    def label(self) -> str:
        flags = ",".join(f"{k}={v}" for k, v in self.constexprs
                         if k in ("HAS_RESIDUAL", "BLOCK_H", "BLOCK_T"))
        return f"{self.kernel}[{flags},warps={self.num_warps}]"

    def signature(self) -> tuple[dict, dict]:
        """Triton's signature and attrs, as JITFunction specializes a launch's arguments."""
        consts = dict(self.constexprs)
        values = dict(self.args)
        names = self.fn.arg_names
        assert set(names) == set(values) | set(consts), (
            f"{self.kernel}: arguments {sorted(set(names) ^ (set(values) | set(consts)))} "
            "differ between the kernel and this table")
        sig, attrs = {}, {}
        for i, name in enumerate(names):
            if name in consts:
                sig[name] = "constexpr"
                continue
            v = values[name]
            if isinstance(v, Ptr):
                sig[name], aligned = "*" + v, True
            elif isinstance(v, float):
                sig[name], aligned = "fp32", False
            else:
                assert v != 1, "an int equal to 1 is specialized to a constexpr"
                sig[name], aligned = ("i32" if -2**31 <= v < 2**31 else "i64"), v % 16 == 0
            if aligned:
                attrs[(i,)] = [["tt.divisibility", 16]]
        return sig, attrs


def _launch(kernel: str, fn, args: dict, cfg: dict) -> Launch:
    cfg = dict(cfg)
    warps = cfg.pop("num_warps")
    return Launch(kernel, fn, tuple(args.items()), tuple(sorted(cfg.items())), warps)


def launches(dtype: str, hidden_size: int) -> list[Launch]:
    """Everything the wrappers launch for this activation dtype and hidden size."""
    a, h = Ptr(dtype), hidden_size
    i32, f32 = Ptr("i32"), Ptr("fp32")
    out = []
    for res in (True, False):
        out.append(_launch("steer", steer_triton._steer_apply_kernel, dict(
            hidden_ptr=a, residual_ptr=a, token_row_ptr=i32, row_slot_ptr=i32,
            row_scale_ptr=f32, row_op_ptr=i32, vectors_ptr=a, inv_ptr=f32, layer=LAYER,
            hidden_size=h, num_layers=NUM_LAYERS, stride_hidden=h, stride_residual=h),
            steer_triton.launch_config(h, MAX_STEER_ENTRIES, res)))
        out.append(_launch("jobs", jobs_triton._score_jobs_kernel, dict(
            hidden_ptr=a, residual_ptr=a, jobs_i_ptr=i32, jobs_f_ptr=f32, coeff_ptr=f32,
            layer_index_ptr=i32, weights_ptr=f32, acc_ptr=f32, vectors_ptr=a,
            inv_norms_ptr=f32, out_ptr=f32,
            layer=LAYER, hidden_size=h, num_layers=NUM_LAYERS, stride_hidden=h,
            stride_residual=h), jobs_triton.launch_config(h, res)))
    return out


# (experts, top_k) of the routers the expert kernels meet: Mixtral, Qwen3-MoE,
# DeepSeek-V3 / GPT-OSS-sized
EXPERT_SHAPES = ((8, 2), (64, 8), (128, 8), (256, 8))


def expert_launches(dtype: str) -> list[Launch]:
    """What the expert-routing wrappers launch for router logits of this dtype (the
    force kernel's weights are always fp32; ids int32 or int64)."""
    out = []
    for E, K in EXPERT_SHAPES:
        cfg = expert_route_triton.launch_config(E, K)
        mask_cfg = {"BLOCK_E": cfg["BLOCK_E"], "num_warps": cfg["num_warps"]}
        out.append(_launch(f"expert_mask-e{E}", expert_route_triton._expert_mask_kernel, dict(
            logits_ptr=Ptr(dtype), out_ptr=Ptr(dtype), token_slot_ptr=Ptr("i32"),
            route_ptr=Ptr("fp32"), layer=LAYER, num_layers=NUM_LAYERS, num_experts=E,
            stride_logits=E), mask_cfg))
        ids = "i32" if dtype != "fp32" else "i64"  # both id widths, over the dtypes
        out.append(_launch(f"expert_force-e{E}k{K}-{ids}",
                           expert_route_triton._expert_force_kernel, dict(
            weights_ptr=Ptr("fp32"), ids_ptr=Ptr(ids), token_slot_ptr=Ptr("i32"),
            route_ptr=Ptr("fp32"), counts_ptr=Ptr("i32"), layer=LAYER,
            num_layers=NUM_LAYERS, num_experts=E, top_k=K), cfg))
    return out


@dataclass(frozen=True)
class Compiled:
    kernel: object  # triton CompiledKernel
    registers: int  # per thread
    spill_stores: int  # bytes
    spill_loads: int  # bytes
    stack: int  # bytes of stack frame per thread
    shared: int  # bytes of shared memory per block
    ptxas_log: str


_PROPS = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
_REGS = re.compile(r"Used (\d+) registers")


@functools.cache
def compile_launch(launch: Launch, cc: int) -> Compiled:
    """One compile per (launch, target): launches with identical signatures and
    constexprs share it."""
    sig, attrs = launch.signature()
    src = ASTSource(launch.fn, sig, constexprs=dict(launch.constexprs), attrs=attrs)
    log = io.StringIO()
    with (tempfile.TemporaryDirectory() as cache_dir, knobs.cache.scope(),
          knobs.nvidia.scope()):
        knobs.cache.dir = cache_dir
        knobs.nvidia.dump_ptxas_log = True
        with contextlib.redirect_stdout(log):
            kernel = triton.compile(src, target=GPUTarget("cuda", cc, 32),
                                    options={"num_warps": launch.num_warps})
    text = log.getvalue()
    entry = text[text.index(f"entry function '{kernel.name}'"):]  # this kernel's report
    stack, stores, loads = map(int, _PROPS.search(entry).groups())
    return Compiled(kernel, int(_REGS.search(entry).group(1)), stores, loads, stack,
                    int(kernel.metadata.shared), text)
