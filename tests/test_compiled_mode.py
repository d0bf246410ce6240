"""Invariant 6: controls work in vLLM's default compiled mode, not only enforce_eager.

A plain Python patch is traced once and then silently stops applying; here the first
generate calls trigger tracing with nobody steered, and later calls must still steer
exactly the request that asks, leaving its batch neighbours untouched.
"""

import pytest

from conftest import run_helper

pytestmark = pytest.mark.engine


def test_steering_applies_per_request_after_compilation(model_dir, demo_vector, artifacts):
    out = run_helper("compiled_mode.py", {
        "model": str(model_dir), "artifacts": str(artifacts), "vector": "joyful",
        "prompts": ["The capital of France is", "My favourite food is", "Once upon a time"],
        "max_tokens": 12,
    }, env={"VLLM_DISABLE_COMPILE_CACHE": "1"})
    assert out["compiled"] and not out["runtime_eager"]
    plain, pos, neg = out["plain"], out["steer_pos"], out["steer_neg"]
    assert pos[1] != plain[1] and neg[1] != plain[1] and pos[1] != neg[1]
    for run in (pos, neg, out["plain_again"]):
        assert run[0] == plain[0] and run[2] == plain[2]  # neighbours untouched
    assert out["plain_again"] == plain  # nothing sticks after steered requests end
    assert out["steered_tokens"] > 0
