"""Bad input: 4xx in OpenAI's error shape, and nothing reaches the engine."""

from __future__ import annotations

import httpx
import numpy as np
import openai
import pytest

from vsteer.server.error_codes import ERROR_CODES

from conftest import ADMIN_KEY, API_KEY, MODEL_NAME

pytestmark = pytest.mark.engine

BAD_CONTROLS = [
    ({"steer": [{"vector": "nope"}]}, "unknown steering vector", "control.steer[0].vector"),
    ({"steer": [{"vector": "../../etc/passwd"}]}, "invalid artifact name", None),
    ({"steer": [{"vector": "joyful", "layers": [30]}]}, "out of range", None),
    ({"steer": [{"vector": "joyful", "layers": [-1]}]}, "out of range", None),
    ({"steer": [{"vector": "joyful", "layers": [2]}]}, "no direction at layer 2", None),
    ({"steer": [{"vector": "joyful", "scale": 1e6}]}, "within", "control.steer[0].scale"),
    ({"steer": [{"vector": "joyful", "scale": "big"}]}, "valid number",
     "control.steer[0].scale"),
    ({"steer": [{"vector": "joyful", "op": "multiply"}]}, "op", "control.steer[0].op"),
    ({"steer": [{"vector": "joyful", "positions": "middle"}]}, "positions", None),
    ({"steer": [{"vector": "joyful", "extra": 1}]}, "Extra inputs", None),
    ({"steer": {"vector": "joyful"}}, "valid list", None),
    ({"steer": [{"vector": "joyful"}] * 9}, "at most 8", None),
    ({"refusal": {"mode": "guard"}}, "control.refusal", None),
    # a field the mode does not read is refused, not ignored
    ({"refusal": {"mode": "controller", "controller": "refusal-ctrl", "scale": 2.0}},
     "does not apply to mode 'controller'", "control.refusal.scale"),
    ({"refusal": {"mode": "guard", "direction": "refusal", "layers": [3]}},
     "does not apply to mode 'guard'", "control.refusal.layers"),
    ({"early_exit": {"mode": "off", "threshold": 0.5}}, "does not apply to mode 'off'",
     "control.early_exit.threshold"),
    ("steer", "must be a JSON object", "control"),
]


def _engine_prompt_tokens(server) -> float:
    return server.metric("vllm:prompt_tokens_total")


@pytest.mark.parametrize("control,message,param", BAD_CONTROLS)
def test_bad_control_is_400_and_never_enqueued(server, control, message, param):
    before = _engine_prompt_tokens(server)
    with pytest.raises(openai.BadRequestError) as e:
        server.client().chat.completions.create(
            model=MODEL_NAME, messages=[{"role": "user", "content": "hi"}], max_tokens=4,
            extra_body={"control": control})
    err = e.value.body
    assert e.value.status_code == 400 and err["type"] == "invalid_request_error"
    assert message in err["message"]
    assert err["code"] in ERROR_CODES  # every error names its code, from one vocabulary
    if param:
        assert err["param"] == param  # one path syntax: control.steer[0].scale
    assert _engine_prompt_tokens(server) == before


def test_non_finite_scale_is_400(server):
    # Python's json accepts the NaN literal; the server must still refuse it.
    body = ('{"model": "' + MODEL_NAME + '", "messages": [{"role": "user", "content": '
            '"hi"}], "control": {"steer": [{"vector": "joyful", "scale": NaN}]}}')
    r = httpx.post(server.base_url + "/v1/chat/completions", content=body,
                   headers={"Authorization": f"Bearer {API_KEY}",
                            "Content-Type": "application/json"})
    assert r.status_code == 400 and "scale" in r.json()["error"]["message"]


def test_vector_for_another_model_is_400(server, store):
    from vsteer.artifacts import ModelFingerprint, SteeringVector

    other = ModelFingerprint("LlamaForCausalLM", 576, 32)
    store.save_vector("other-model", SteeringVector({3: np.ones(576, np.float32)}, other),
                      overwrite=True)
    with pytest.raises(openai.BadRequestError) as e:
        server.client().chat.completions.create(
            model=MODEL_NAME, messages=[{"role": "user", "content": "hi"}], max_tokens=4,
            extra_body={"control": {"steer": [{"vector": "other-model"}]}})
    assert e.value.body["code"] == "wrong_model" and "32 layers" in e.value.body["message"]


def test_reserved_vllm_xargs_key_is_400(server):
    with pytest.raises(openai.BadRequestError):
        server.client().chat.completions.create(
            model=MODEL_NAME, messages=[{"role": "user", "content": "hi"}], max_tokens=4,
            extra_body={"vllm_xargs": {"vsteer": '{"rid": "x"}'}})


def test_malformed_json_and_bad_request_fields(server):
    h = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}
    r = httpx.post(server.base_url + "/v1/chat/completions", content=b"{nope", headers=h)
    assert r.status_code == 400 and "not valid JSON" in r.json()["error"]["message"]
    r = httpx.post(server.base_url + "/v1/chat/completions", json=[1, 2], headers=h)
    assert r.status_code == 400
    r = httpx.post(server.base_url + "/v1/chat/completions", headers=h,
                   json={"model": MODEL_NAME, "messages": "hi"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "messages"



def test_request_rejected_by_vllms_own_validators_is_400(server):
    """vLLM's request models raise their own error class (not pydantic's) for some
    checks; found by the fuzzer (test_fuzz.py) as a 500."""
    before = _engine_prompt_tokens(server)
    r = httpx.post(server.base_url + "/v1/completions",
                   headers={"Authorization": f"Bearer {API_KEY}"},
                   json={"model": MODEL_NAME, "prompt": "", "max_tokens": 4})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["param"] == "prompt" and "non-empty" in err["message"]
    assert _engine_prompt_tokens(server) == before


def test_oversized_body_is_413_before_it_is_read(server):
    from vsteer.server.body import MAX_BODY_BYTES

    h = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}
    big = b'{"model": "m", "pad": "' + b"x" * MAX_BODY_BYTES + b'"}'
    r = httpx.post(server.base_url + "/v1/chat/completions", content=big, headers=h)
    assert r.status_code == 413 and "larger than" in r.json()["error"]["message"]

    def chunks():  # no Content-Length: the limit applies while streaming
        for _ in range(5):
            yield b"x" * (MAX_BODY_BYTES // 4)

    r = httpx.post(server.base_url + "/v1/chat/completions", content=chunks(), headers=h)
    assert r.status_code == 413


def test_wrong_key_is_401(server):
    client = openai.OpenAI(base_url=server.base_url + "/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as e:
        client.chat.completions.create(model=MODEL_NAME, max_tokens=4,
                                       messages=[{"role": "user", "content": "hi"}])
    assert e.value.body["type"] == "authentication_error"
    with pytest.raises(openai.AuthenticationError):
        client.models.list()


@pytest.mark.parametrize("path", ["/v1/models", "/v1/chat/completions", "/v1/completions",
                                  "/v1/control/vectors"])
def test_missing_key_is_401(server, path):
    before = _engine_prompt_tokens(server)
    if path == "/v1/models" or path == "/v1/control/vectors":
        r = httpx.get(server.base_url + path)
    else:
        r = httpx.post(server.base_url + path, json={"model": MODEL_NAME, "prompt": "hi",
                                                     "messages": [{"role": "user",
                                                                   "content": "hi"}]})
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
    assert _engine_prompt_tokens(server) == before


def test_admin_key_is_a_valid_client_key(server):
    assert server.client(ADMIN_KEY).models.list().data


@pytest.mark.parametrize("route, body", [
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": ""}], "max_tokens": 0}),
    ("/v1/completions", {"prompt": "hi", "max_tokens": 0}),
])
def test_sampling_params_vllm_rejects_inside_its_handler_are_400(server, route, body):
    """vLLM checks some fields only while building SamplingParams, inside its handler
    (found by the fuzzer as a 500): OpenAI's error shape, the param named."""
    r = httpx.post(server.base_url + route, headers={"Authorization": f"Bearer {API_KEY}"},
                   json={"model": MODEL_NAME, **body})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["param"] == "max_tokens" and "max_tokens" in err["message"]
