"""Every Triton kernel compiles for real GPU targets, on CPU without a GPU (invariant 9).

The interpreter (tests/triton_interp) accepts code the compiler rejects, e.g. a plain
module-level int read inside @triton.jit; this runs Triton's front end and its bundled
ptxas for sm_80 and sm_90 (kernels/gpu_compile.py) over what the wrappers launch:
    steer, jobs: {fp16, bf16, fp32} x hidden {576, 4096, 8192} x HAS_RESIDUAL
        {True, False}, BLOCK_* and num_warps from the wrapper's own launch_config;
    expert_mask, expert_force: router logits {fp16, bf16, fp32} x (experts, top-k)
        {(8, 2), (64, 8), (128, 8), (256, 8)}, ids int32 and int64.
Each (launch, target) compiles once per session. Registers and spills are compiler
outputs read from ptxas's report; they are checked to be reported and to let a block
launch, not against a number (bench/triton_compile.py prints them).

Needs triton, not a GPU. Under TRITON_INTERPRET=1 @triton.jit yields interpreter
functions with nothing to compile: the module skips there (`make test` runs it in the
plain pytest process).
"""

from __future__ import annotations

import os

import pytest

pytest.importorskip("triton")
if os.environ.get("TRITON_INTERPRET", "0").lower() not in ("", "0", "false", "off"):
    pytest.skip("TRITON_INTERPRET is set: the kernels are interpreter functions, not "
                "compilable ones; this module runs without it", allow_module_level=True)

from vsteer.kernels.gpu_compile import (  # noqa: E402  (after the skips)
    DTYPES,
    HIDDEN_SIZES,
    MAX_SHARED,
    REGISTER_FILE,
    TARGETS,
    compile_launch,
    expert_launches,
    launches,
)

pytestmark = pytest.mark.filterwarnings("ignore:TRITON_DEFAULT_FP_FUSION is unset")

CASES = [pytest.param(launch, cc, id=f"sm{cc}-{dtype}-h{hidden}-{launch.label}")
         for cc in TARGETS for dtype in DTYPES for hidden in HIDDEN_SIZES
         for launch in launches(dtype, hidden)]
CASES += [pytest.param(launch, cc, id=f"sm{cc}-{dtype}-{launch.label}")
          for cc in TARGETS for dtype in DTYPES for launch in expert_launches(dtype)]


@pytest.mark.parametrize("launch,cc", CASES)
def test_compiles_for_gpu_target(launch, cc):
    c = compile_launch(launch, cc)
    k = c.kernel
    arch = "sm_90a" if cc == 90 else f"sm_{cc}"
    assert f".target {arch}" in k.asm["ptx"]
    assert f".entry {k.name}(" in k.asm["ptx"]
    assert k.asm["cubin"][:4] == b"\x7fELF"  # ptxas wrote a device binary
    assert k.metadata.num_warps == launch.num_warps
    # resources ptxas reports, as a driver would read them on load
    assert isinstance(c.registers, int) and 0 < c.registers <= 255
    assert isinstance(c.spill_stores, int) and isinstance(c.spill_loads, int)
    assert c.registers * launch.num_warps * 32 <= REGISTER_FILE  # the block fits an SM
    assert c.shared <= MAX_SHARED[cc]


def test_every_kernel_is_covered():
    """Each launched @triton.jit function (`*_kernel`) in kernels/*_triton.py is in the
    grid above; every other one is a device function a covered kernel calls."""
    import triton

    from vsteer.kernels import expert_route_triton, jobs_triton, steer_triton

    defined = {fn for m in (steer_triton, jobs_triton, expert_route_triton)
               for fn in vars(m).values() if isinstance(fn, triton.runtime.JITFunction)}
    kernels = {fn for fn in defined if fn.__name__.endswith("_kernel")}
    covered = {p.values[0].fn for p in CASES}
    assert kernels == covered
    for helper in defined - kernels:
        assert any(f"{helper.__name__}(" in k.src for k in covered), helper.__name__
