"""`control.capture` through the server (issue 18): the residual stream of a request's
own tokens, prompt and generated, equal to transformers' hidden states for the same
token ids; other requests in the batch untouched; too large a capture refused before
the engine. Compiled mode: tests/test_compiled_mode.py."""

from __future__ import annotations

import json

import httpx
import numpy as np
import pytest

import stream_reference
from chat_api import ask, ask_together_shared, body_for, text
from conftest import API_KEY
from prompts import NEUTRAL
from stream_reference import decode_capture, edited_states

pytestmark = pytest.mark.engine

LAYERS = [0, 7, 28]  # not the last: transformers' final entry is post-norm


def complete(server, prompt: str, control: dict, max_tokens: int = 8, **kw) -> dict:
    return stream_reference.complete(server, prompt, control, max_tokens, **kw)


def reference(hf_model, ids: list[int]) -> list[np.ndarray]:
    return edited_states(hf_model, ids, {}, LAYERS)  # [n, H] per layer


def assert_close(got: np.ndarray, ref: list[np.ndarray]) -> None:
    stream_reference.assert_close(got, ref, LAYERS)


def test_all_positions_equal_transformers_for_the_same_tokens(server, hf_model):
    data = complete(server, "The quick brown fox", {"capture": {"layers": LAYERS,
                                                                "positions": "all"}})
    choice = data["choices"][0]
    prompt_ids, gen_ids = choice["prompt_token_ids"], choice["token_ids"]
    rep = data["control"]["capture"]
    assert rep["layers"] == LAYERS and rep["positions"] == "all"
    got = decode_capture(rep)
    # every token fed to the model: the prompt and all generated tokens but the last
    ids = prompt_ids + gen_ids[:-1]
    assert got.shape == (len(LAYERS), len(ids), 576)
    assert_close(got, reference(hf_model, ids))


def test_last_prompt_and_generated_positions(server, hf_model):
    prompt = "Steering vectors are fun"
    last = complete(server, prompt, {"capture": {"layers": LAYERS}})  # default: last
    pids = last["choices"][0]["prompt_token_ids"]
    got = decode_capture(last["control"]["capture"])
    assert got.shape == (len(LAYERS), 1, 576)
    assert_close(got, [r[-1:] for r in reference(hf_model, pids)])
    gen = complete(server, prompt, {"capture": {"layers": LAYERS, "positions": "generated"}})
    g = gen["choices"][0]["token_ids"]
    got = decode_capture(gen["control"]["capture"])
    assert got.shape == (len(LAYERS), len(g) - 1, 576)
    assert_close(got, [r[len(pids):] for r in reference(hf_model, pids + g[:-1])])


def test_a_capturing_request_leaves_its_batch_untouched(server):
    cap = {"capture": {"layers": [5, 20], "positions": "all"}}
    wide = {"projection_clamp": {"vector": "joyful", "lo": -1e6, "hi": 1e6}}  # traced
    cases = [(NEUTRAL[0], cap), (NEUTRAL[1], wide), (NEUTRAL[0], None)]
    solo = [text(ask(server, p, c)) for p, c in cases]
    together = ask_together_shared(server, cases)  # proven to share steps
    assert [text(r) for r in together] == solo
    shape = together[0]["control"]["capture"]["shape"]
    usage = together[0]["usage"]
    assert shape == [2, usage["prompt_tokens"] + usage["completion_tokens"] - 1, 576]


def test_a_stream_carries_the_capture_on_its_final_chunk(server):
    r = httpx.post(server.base_url + "/v1/chat/completions", timeout=300,
                   json=body_for(NEUTRAL[2], {"capture": {"layers": [3]}}, stream=True),
                   headers={"Authorization": f"Bearer {API_KEY}"})
    lines = [ln[6:] for ln in r.text.splitlines() if ln.startswith("data: {")]
    final = json.loads(lines[-1])
    assert final["choices"] == [] and final["control"]["capture"]["shape"] == [1, 1, 576]


def test_too_large_a_capture_is_a_400_before_the_engine(server):
    before = server.metric("vllm:prompt_tokens_total")
    r = httpx.post(server.base_url + "/v1/chat/completions", timeout=60,
                   json=body_for("hi", {"capture": {"layers": list(range(30)),
                                                    "positions": "all"}}),
                   headers={"Authorization": f"Bearer {API_KEY}"})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert (err["code"], err["param"]) == ("capture_too_large", "control.capture")
    assert server.metric("vllm:prompt_tokens_total") == before


def test_the_capture_probe_example_trains_a_probe_through_the_api(server):
    """examples/capture_probe.py: captures through the openai SDK, a numpy probe on half,
    AUROC on the other half. Measured 0.80 (layer 12, 32 + 32 prompts, 2026-12-01);
    above 0.7 on 32 held-out prompts is far from chance (p < 0.01)."""
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).parents[1] / "examples" / "capture_probe.py"
    out = subprocess.run([sys.executable, str(script), "--url", server.base_url + "/v1",
                          "--key", API_KEY, "--layer", "12", "--n", "32"],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["hidden"] == 576 and result["test"] == 32
    assert result["test_auroc"] > 0.7, result
