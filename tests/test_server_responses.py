"""`control` on the Responses API (POST /v1/responses) through the openai SDK: the same
validation, the same steering and the same reports as chat."""

from __future__ import annotations

import openai
import pytest

from vsteer.server.error_codes import ERROR_CODES

from chat_api import ask, text
from conftest import MODEL_NAME, PROBE
from prompts import NEUTRAL

pytestmark = pytest.mark.engine

STEER = {"steer": [{"vector": "joyful", "scale": 4.0}]}
MAX = 24  # chat_api.MAX_TOKENS


def _respond(server, prompt: str, control: dict | None = None, **kw):
    extra = {"control": control} if control is not None else {}
    return server.client().responses.create(model=MODEL_NAME, input=prompt,
                                            max_output_tokens=MAX, temperature=0,
                                            extra_body=extra, **kw)


def test_steering_on_responses_equals_steering_on_chat(server, demo_vector):
    plain, steered = _respond(server, NEUTRAL[0]), _respond(server, NEUTRAL[0], STEER)
    assert plain.output_text == text(ask(server, NEUTRAL[0]))
    assert steered.output_text == text(ask(server, NEUTRAL[0], STEER)) != plain.output_text
    rep = steered.model_extra["control"]
    assert rep["steer"][0]["vector"] == "joyful" and rep["request_id"]
    assert plain.model_extra["control"] == {}


def test_prefill_and_per_token_reports_arrive_complete(server, refusal_artifacts,
                                                       probe_artifacts):
    r = _respond(server, "What is the capital of Peru?", {
        "refusal": {"mode": "guard", "direction": "refusal"},
        "hallucination": {"probe": PROBE, "per_token": True}})
    rep = r.model_extra["control"]
    assert rep["refusal"]["score"] is not None and rep["hallucination"]["score"] is not None
    assert len(rep["hallucination"]["token_scores"]) == r.usage.output_tokens
    assert "errors" not in rep


def test_a_stream_carries_the_report_on_the_completed_response(server, demo_vector):
    events = list(_respond(server, NEUTRAL[1], STEER, stream=True))
    done = [e for e in events if e.type == "response.completed"]
    assert len(done) == 1 and events[-1] is done[0]
    rep = done[0].response.model_extra["control"]
    assert rep["steer"][0]["vector"] == "joyful"
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert deltas == _respond(server, NEUTRAL[1], STEER).output_text


@pytest.mark.parametrize("control,code,param", [
    ({"steer": [{"vector": "nope"}]}, "unknown_vector", "control.steer[0].vector"),
    ({"hallucination": {"probe": PROBE, "per_token": True}}, "unsupported_combination",
     "control.hallucination.per_token"),
])
def test_bad_controls_on_responses_are_coded_400s_before_the_engine(server, probe_artifacts,
                                                                    control, code, param):
    before = server.metric("vllm:prompt_tokens_total")
    with pytest.raises(openai.BadRequestError) as e:
        _respond(server, "hi", control, stream=True)
    err = e.value.body
    assert (err["code"], err["param"]) == (code, param) and code in ERROR_CODES
    assert server.metric("vllm:prompt_tokens_total") == before
