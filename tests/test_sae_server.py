"""SAE features through the server (issue 18): an SAE in SAELens's layout imported with
`vsteer sae import`, then `features` (`add`, `clamp`) and `monitor` on real requests.

A random SAE stands in for a trained one: 64 unit-norm features at layer 7, encoder
tied to the decoder (so a clamp on an active feature lands exactly on its value).
Evidence: each request also captures its stream (`control.capture`) and is compared
with transformers fed the same token ids and edited by the definition. Compiled mode:
tests/test_compiled_mode.py."""

from __future__ import annotations

import httpx
import numpy as np
import pytest

import stream_reference
from chat_api import ask, ask_together_shared, text
from conftest import API_KEY, MODEL_NAME, SAE, SAE_FEATURES
from prompts import NEUTRAL
from stream_reference import decode_capture, edited_states, fed_ids

pytestmark = pytest.mark.engine

LAYER, LATER, FEATURES = 7, 12, SAE_FEATURES  # the `sae` fixture's (conftest.py)
PROMPT = "The weather this morning was very"
CAPTURE = {"capture": {"layers": [LAYER, LATER], "positions": "all"}}


def complete(server, control: dict) -> dict:
    return stream_reference.complete(server, PROMPT, control)


def edited_reference(hf_model, ids: list[int], edit) -> list[np.ndarray]:
    """hidden_states at LAYER and LATER with `edit(x [n, H]) -> x` applied after LAYER."""
    return edited_states(hf_model, ids, {LAYER: edit}, [LAYER, LATER])


def test_add_equals_steering_with_the_decoder_row_bit_for_bit(server, sae):
    feat = complete(server, {"features": [{"sae": SAE, "feature": 5, "value": 6.0}],
                             **CAPTURE})
    steer = complete(server, {"steer": [{"vector": "sae-f5", "scale": 6.0}], **CAPTURE})
    plain = complete(server, CAPTURE)
    a, b = decode_capture(feat["control"]["capture"]), decode_capture(
        steer["control"]["capture"])
    assert feat["choices"][0]["token_ids"] == steer["choices"][0]["token_ids"]
    assert np.array_equal(a, b)
    assert not np.array_equal(a, decode_capture(plain["control"]["capture"]))
    applied = feat["control"]["features"]
    assert applied["entries"][0] == {"sae": SAE, "feature": 5, "op": "add", "value": 6.0,
                                     "layer": LAYER, "positions": "all"}
    assert applied["tokens"] == len(fed_ids(feat))  # every token fed, prompt and reply


def test_clamp_sets_the_feature_by_its_definition(server, sae, hf_model):
    plain = decode_capture(complete(server, CAPTURE)["control"]["capture"])[0]
    active = (sae.encode(plain) > 0).sum(axis=0)  # [F] positions each feature is active at
    f = int(np.argmax(np.where(active < len(plain), active, -1)))  # often, not always
    value = 2.0
    data = complete(server, {"features": [{"sae": SAE, "feature": f, "op": "clamp",
                                           "value": value}], **CAPTURE})
    ids = fed_ids(data)
    got = decode_capture(data["control"]["capture"])

    def clamp(x):
        act = sae.encode(x)[:, f]
        return (x + (value - act)[:, None] * sae.W_dec[f]).astype(np.float32)

    stream_reference.assert_close(got, edited_reference(hf_model, ids, clamp),
                                  [LAYER, LATER])
    # where the feature was active, it now reads `value` (tied unit encoder)
    plain = edited_reference(hf_model, ids, lambda x: x)[0]
    was_active = sae.encode(plain)[:, f] > 0
    assert was_active.any()
    after = sae.encode(got[0])[:, f]
    assert np.allclose(after[was_active], value, atol=2e-2), after.round(3).tolist()


def test_monitor_reports_the_top_features_at_the_last_prompt_token_and_per_token(server,
                                                                                sae):
    data = complete(server, {"monitor": {"sae": SAE, "top_k": 5, "per_token": True},
                             **CAPTURE})
    mon = data["control"]["monitor"]
    states = decode_capture(data["control"]["capture"])[0]  # [n, H] at LAYER
    n_prompt = len(data["choices"][0]["prompt_token_ids"])
    n_gen = len(data["choices"][0]["token_ids"])
    assert (mon["sae"], mon["layer"], mon["top_k"]) == (SAE, LAYER, 5)
    assert [t["position"] for t in mon["tokens"]] == list(range(n_prompt - 1,
                                                                n_prompt - 1 + n_gen))
    assert mon["prompt"] == mon["tokens"][0]
    for t in mon["tokens"]:
        act = sae.encode(states[t["position"]])
        want = np.argsort(-act)[:5]
        assert t["features"] == want.tolist()
        assert np.allclose(t["activations"], act[want], rtol=1e-3, atol=1e-4)


def test_feature_and_monitor_requests_in_one_batch_equal_solo_runs(server, sae):
    cases = [(NEUTRAL[0], {"features": [{"sae": SAE, "feature": 3, "value": 8.0},
                                        {"sae": SAE, "feature": 9, "op": "clamp",
                                         "value": 0.0, "positions": "generated"}]}),
             (NEUTRAL[1], {"monitor": {"sae": SAE, "top_k": 3}}),
             (NEUTRAL[0], None)]
    solo = [ask(server, p, c) for p, c in cases]
    together = ask_together_shared(server, cases)  # proven to share steps
    assert [text(r) for r in together] == [text(r) for r in solo]
    assert text(solo[0]) != text(solo[2])  # the features did act
    assert together[1]["control"]["monitor"]["prompt"] == solo[1]["control"]["monitor"][
        "prompt"]


@pytest.mark.parametrize(("control", "code", "param"), [
    ({"features": [{"sae": "nope", "feature": 1, "value": 1.0}]}, "unknown_sae",
     "control.features[0].sae"),
    ({"features": [{"sae": SAE, "feature": FEATURES, "value": 1.0}]},
     "feature_out_of_range", "control.features[0].feature"),
    ({"features": [{"sae": SAE, "feature": 1, "value": 1e9}]}, "scale_out_of_range",
     "control.features[0].value"),
    ({"features": []}, "invalid_value", "control.features"),
    ({"monitor": {"sae": "nope"}}, "unknown_sae", "control.monitor.sae"),
    ({"monitor": {"sae": SAE, "top_k": 0}}, "invalid_value", "control.monitor.top_k"),
])
def test_bad_sae_controls_are_400s_before_the_engine(server, sae, control, code, param):
    before = server.metric("vllm:prompt_tokens_total")
    r = httpx.post(server.base_url + "/v1/completions", timeout=60, headers={
        "Authorization": f"Bearer {API_KEY}"}, json={
        "model": MODEL_NAME, "prompt": "hi", "max_tokens": 2, "control": control})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert (err["code"], err["param"]) == (code, param), err
    assert server.metric("vllm:prompt_tokens_total") == before
