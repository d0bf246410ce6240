"""Reports of replies with several choices: each choice's per-token records are its
own (n > 1 runs n engine requests under one control), and a stream that cannot carry
them per choice is refused before the engine."""

from __future__ import annotations

import httpx
import pytest

from chat_api import body_for, post, trace
from conftest import API_KEY, PROBE

pytestmark = pytest.mark.engine

PER_TOKEN = {"hallucination": {"probe": PROBE, "per_token": True}}


def test_each_choice_reports_its_own_token_scores(server, probe_artifacts):
    r = post(server, body_for("Name a famous river.", PER_TOKEN, n=3, temperature=1.0,
                              seed=7, logprobs=True))
    assert r.status_code == 200, r.text
    data = r.json()
    rep = data["control"]
    assert len(rep["choices"]) == 3 and "errors" not in rep
    for choice, mine in zip(data["choices"], rep["choices"], strict=True):
        tokens = len(choice["logprobs"]["content"])  # this choice's own tokens
        assert mine["index"] == choice["index"]
        assert len(mine["hallucination"]["token_scores"]) == tokens
        assert mine["hallucination"]["score"] is not None
    assert sum(len(c["hallucination"]["token_scores"]) for c in rep["choices"]) == \
        data["usage"]["completion_tokens"]
    assert rep["hallucination"]["per_token"] is True  # what was applied, once
    steps = trace(server, rep["request_id"])
    assert steps and all(b >= 1 for _, b in steps)


def test_a_stream_with_several_choices_cannot_carry_per_token_scores(server, probe_artifacts):
    r = httpx.post(server.base_url + "/v1/chat/completions", timeout=60,
                   json=body_for("hi", PER_TOKEN, n=2, stream=True),
                   headers={"Authorization": f"Bearer {API_KEY}"})
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "unsupported_combination"
