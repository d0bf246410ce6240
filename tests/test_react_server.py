"""`react` through the server (issue 18): a condition checked at every token a request
samples, acting on the rest of the reply once it holds.

The condition here is an SAE feature (the random `smol-sae` at layer 7, conftest.py):
a first run that never fires gives every token's state, from which the test picks a
feature and a token g where the feature first rises above all earlier tokens; with
that threshold the request must fire exactly at g. Then `steer` must leave tokens
before g alone and change the stream exactly as transformers does with the vector
added from the firing row on (layers after the condition's layer) and at every layer
after it; `stop` must end the reply with g tokens and finish_reason content_filter;
`release` is the complement of `steer`. Compiled mode: tests/test_compiled_mode.py."""

from __future__ import annotations

import json

import httpx
import numpy as np
import pytest

import stream_reference
from chat_api import ask, ask_together_shared, text
from conftest import API_KEY, MODEL_NAME, PROBE, SAE, SAE_LAYER
from prompts import NEUTRAL
from stream_reference import add_at, decode_capture, edited_states

pytestmark = pytest.mark.engine

PROMPT = "Once upon a time, in a small village by the sea,"
STEER_LAYERS = [6, 7, 8]  # before, at and after the condition's layer (7)
SCALE = 6.0
CAP_LAYERS = [SAE_LAYER, 8, 12]
NEVER = 1e9


def complete(server, control: dict, **kw) -> dict:
    return stream_reference.complete(server, PROMPT, control, max_tokens=8, **kw)


def react(feature: int, threshold: float, action: str, **kw) -> dict:
    body = {"when": {"sae": SAE, "feature": feature}, "threshold": threshold,
            "action": action, **kw}
    if action != "stop":
        body["steer"] = {"vector": "joyful", "scale": SCALE, "layers": STEER_LAYERS}
    return {"react": body, "capture": {"layers": CAP_LAYERS, "positions": "all"}}


def reference(hf_model, ids: list[int], vector, where) -> list[np.ndarray]:
    """hidden_states at CAP_LAYERS with SCALE·v[l] added after layer l at the positions
    `where(l)` names, for l in STEER_LAYERS."""
    edits = {la: add_at(SCALE * vector.directions[la], where(la)) for la in STEER_LAYERS}
    return edited_states(hf_model, ids, edits, CAP_LAYERS)


def assert_close(got: np.ndarray, ref: list[np.ndarray]) -> None:
    stream_reference.assert_close(got, ref, CAP_LAYERS)


def rising_feature(acts: np.ndarray) -> tuple[int, int, float]:
    """(feature, g, threshold): acts [n, F] at the rows sampling tokens 0..n-1; the
    feature's activation at token g (2 <= g < n - 1) is above every earlier token's,
    and the threshold lies between."""
    n = acts.shape[0]
    for g in range(2, n - 1):
        for f in range(acts.shape[1]):
            before = max(float(acts[:g, f].max()), 0.0)
            if acts[g, f] > before + 0.05:
                return f, g, (float(acts[g, f]) + before) / 2
    pytest.fail("no feature rises at a middle token: change PROMPT")


@pytest.fixture(scope="module")
def firing(server, sae):
    """(feature, g, threshold, the never-firing run): see rising_feature."""
    base = complete(server, react(0, NEVER, "steer"))
    assert base["control"]["react"]["fired_at"] is None
    p = len(base["choices"][0]["prompt_token_ids"])
    n = len(base["choices"][0]["token_ids"])
    states = decode_capture(base["control"]["capture"])[0]  # [p + n - 1, H] at layer 7
    f, g, threshold = rising_feature(sae.encode(states[p - 1: p - 1 + n]))
    return f, g, threshold, base


def test_the_feature_scores_equal_the_sae_at_every_checked_token(server, sae, firing):
    f, g, threshold, base = firing
    probe = complete(server, react(f, NEVER, "steer"))
    p = len(probe["choices"][0]["prompt_token_ids"])
    states = decode_capture(probe["control"]["capture"])[0]
    scores = probe["control"]["react"]["scores"]
    want = sae.encode(states[p - 1: p - 1 + len(scores)])[:, f]
    assert len(scores) == len(probe["choices"][0]["token_ids"])
    assert np.allclose(scores, want, rtol=1e-3, atol=1e-4)


def test_steer_starts_exactly_at_the_firing_token(server, hf_model, demo_vector, firing):
    f, g, threshold, base = firing
    data = complete(server, react(f, threshold, "steer"))
    rep = data["control"]["react"]
    assert rep["fired"] and rep["fired_at"] == g
    assert len(rep["scores"]) == g + 1  # checked up to the firing token, then no more
    toks, base_toks = data["choices"][0]["token_ids"], base["choices"][0]["token_ids"]
    assert toks[:g] == base_toks[:g]  # nothing before the firing token moved
    assert toks != base_toks
    pids = data["choices"][0]["prompt_token_ids"]
    fp = len(pids) - 1 + g  # the row that samples token g
    ids = pids + toks[:-1]
    ref = reference(hf_model, ids, demo_vector,
                    lambda la: list(range(fp if la > SAE_LAYER else fp + 1, len(ids))))
    assert_close(decode_capture(data["control"]["capture"]), ref)


def test_release_steers_until_the_firing_token(server, hf_model, demo_vector, sae):
    """Under release the stream moves from the start, so the never-firing release run
    gives the states the condition reads: its layer-7 capture minus the layer-7 add
    (the condition is read before its own layer's action)."""
    base = complete(server, react(0, NEVER, "release"))
    p = len(base["choices"][0]["prompt_token_ids"])
    n = len(base["choices"][0]["token_ids"])
    states = decode_capture(base["control"]["capture"])[0][p - 1: p - 1 + n]
    read = states - SCALE * demo_vector.directions[SAE_LAYER]
    f, g, threshold = rising_feature(sae.encode(read))
    data = complete(server, react(f, threshold, "release"))
    assert data["control"]["react"]["fired_at"] == g
    toks = data["choices"][0]["token_ids"]
    assert toks[:g] == base["choices"][0]["token_ids"][:g]
    pids = data["choices"][0]["prompt_token_ids"]
    fp = p - 1 + g
    ids = pids + toks[:-1]
    ref = reference(hf_model, ids, demo_vector,
                    lambda la: list(range(p - 1, fp if la > SAE_LAYER else fp + 1)))
    assert_close(decode_capture(data["control"]["capture"]), ref)


def test_stop_ends_the_reply_at_the_firing_token(server, firing):
    f, g, threshold, base = firing
    data = complete(server, react(f, threshold, "stop"))
    choice = data["choices"][0]
    assert data["control"]["react"]["fired_at"] == g
    assert choice["finish_reason"] == "content_filter"
    assert choice["token_ids"][:g] == base["choices"][0]["token_ids"][:g]
    assert len(choice["token_ids"]) <= g + 1  # g tokens, then (at most) the end token
    # streamed: the same end, the same finish_reason
    r = httpx.post(server.base_url + "/v1/completions", timeout=300, headers={
        "Authorization": f"Bearer {API_KEY}"}, json={
        "model": MODEL_NAME, "prompt": PROMPT, "max_tokens": 8, "temperature": 0,
        "stream": True, "control": react(f, threshold, "stop")})
    chunks = [json.loads(ln[6:]) for ln in r.text.splitlines() if ln.startswith("data: {")]
    reasons = [c["finish_reason"] for ch in chunks for c in ch.get("choices", [])
               if c.get("finish_reason")]
    assert reasons == ["content_filter"]
    streamed = "".join(c.get("text", "") for ch in chunks for c in ch.get("choices", []))
    assert streamed == choice["text"]
    assert chunks[-1]["control"]["react"]["fired_at"] == g


def test_a_stop_on_responses_marks_the_response_incomplete(server, sae):
    """A threshold below every activation fires at the first checked token."""
    def respond(threshold: float, **kw):
        return server.client().responses.create(
            model=MODEL_NAME, input=NEUTRAL[0], max_output_tokens=12, temperature=0,
            extra_body={"control": {"react": {"when": {"sae": SAE, "feature": 0},
                                              "threshold": threshold, "action": "stop"}}},
            **kw)

    plain, stopped = respond(NEVER), respond(-1.0)
    # 12 tokens end the plain reply as incomplete too, but for its length
    assert plain.model_extra["control"]["react"]["fired_at"] is None
    assert plain.status == "completed" or plain.incomplete_details.reason == "max_output_tokens"
    assert stopped.status == "incomplete"
    assert stopped.incomplete_details.reason == "content_filter"
    assert stopped.model_extra["control"]["react"]["fired_at"] == 0
    assert stopped.usage.output_tokens < plain.usage.output_tokens
    events = list(respond(-1.0, stream=True))
    assert events[-1].type == "response.incomplete"
    assert events[-1].response.incomplete_details.reason == "content_filter"
    assert events[-1].response.model_extra["control"]["react"]["fired_at"] == 0


def test_the_probe_condition_scores_like_the_per_token_probe(server, probe_artifacts):
    q = "What is the capital of Australia?"
    rx = ask(server, q, {"react": {"when": {"probe": PROBE}, "threshold": 2.0}})
    hp = ask(server, q, {"hallucination": {"probe": PROBE, "per_token": True}})
    assert text(rx) == text(hp)
    scores = rx["control"]["react"]["scores"]
    assert scores == pytest.approx(hp["control"]["hallucination"]["token_scores"], abs=1e-4)
    assert rx["control"]["react"]["fired_at"] is None


def test_the_direction_condition_is_a_cosine_with_its_condition_vector(server, store,
                                                                       refusal_artifacts):
    layer = 9
    d = store.get("direction", "refusal").value.condition[layer]
    data = complete(server, {"react": {"when": {"direction": "refusal", "layer": layer},
                                       "threshold": 2.0},
                             "capture": {"layers": [layer], "positions": "all"}})
    p = len(data["choices"][0]["prompt_token_ids"])
    x = decode_capture(data["control"]["capture"])[0]
    scores = data["control"]["react"]["scores"]
    rows = x[p - 1: p - 1 + len(scores)]
    want = rows @ d / np.linalg.norm(rows, axis=1)
    assert np.allclose(scores, want, atol=1e-4)


def test_reacting_and_plain_requests_in_one_batch_equal_solo_runs(server, sae):
    cases = [(NEUTRAL[0], {"react": {"when": {"sae": SAE, "feature": 1}, "min_tokens": 2,
                                     "action": "steer",
                                     "steer": {"vector": "joyful", "scale": 8.0}}}),
             (NEUTRAL[1], {"react": {"when": {"sae": SAE, "feature": 2}, "min_tokens": 2,
                                     "action": "stop"}}),
             (NEUTRAL[2], {"react": {"when": {"sae": SAE, "feature": 4},
                                     "action": "release",
                                     "steer": {"vector": "joyful", "scale": -8.0}}}),
             (NEUTRAL[0], None)]
    solo = [ask(server, p, c) for p, c in cases]
    assert any(r["control"]["react"]["fired"] for r in solo[:3])
    together = ask_together_shared(server, cases)  # proven to share steps
    assert [text(r) for r in together] == [text(r) for r in solo]
    for a, b in zip(together[:3], solo[:3], strict=True):
        assert a["control"]["react"]["fired_at"] == b["control"]["react"]["fired_at"]
        assert a["choices"][0]["finish_reason"] == b["choices"][0]["finish_reason"]


@pytest.mark.parametrize(("control", "extra", "code", "param"), [
    ({"when": {}}, {}, "missing_field", "control.react.when"),
    ({"when": {"probe": PROBE, "sae": SAE, "feature": 1}}, {}, "conflicting_fields",
     "control.react.when"),
    ({"when": {"sae": SAE, "feature": 1}, "action": "steer"}, {}, "missing_field",
     "control.react.steer"),
    ({"when": {"sae": SAE, "feature": 1}}, {"n": 2}, "unsupported_combination",
     "control.react.action"),
    ({"when": {"sae": SAE, "feature": 1}}, {"min_tokens": 3}, "conflicting_fields",
     "control.react.action"),
    ({"when": {"probe": "nope"}}, {}, "unknown_probe", "control.react.when.probe"),
    ({"when": {"direction": "refusal", "layer": 9}}, {}, "missing_field",
     "control.react.threshold"),
])
def test_bad_react_controls_are_400s_before_the_engine(server, sae, refusal_artifacts,
                                                       control, extra, code, param):
    before = server.metric("vllm:prompt_tokens_total")
    r = httpx.post(server.base_url + "/v1/completions", timeout=60, headers={
        "Authorization": f"Bearer {API_KEY}"}, json={
        "model": MODEL_NAME, "prompt": "hi", "max_tokens": 2, "control": {"react": control},
        **extra})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert (err["code"], err["param"]) == (code, param), err
    assert server.metric("vllm:prompt_tokens_total") == before
