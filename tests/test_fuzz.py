"""Schemathesis against the live server's OpenAPI spec: valid and invalid requests to
every operation, and never a 5xx.

Bounded in time: a fixed number of examples per operation, and generated requests may
ask for at most MAX_TOKENS tokens (a fuzzed max_tokens of a thousand would only make the
run slow, not find more). DELETE is left out so the fuzzer cannot remove the session's
shared artifacts; deletes are tested in test_vectors_api.py.
"""

from __future__ import annotations

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from conftest import ADMIN_KEY

pytestmark = pytest.mark.engine
MAX_TOKENS = 4
EXAMPLES = 20  # per operation and generation mode


def _operations(server) -> list:
    schema = schemathesis.openapi.from_url(server.base_url + "/openapi.json")
    ops = [r.ok() for r in schema.get_all_operations()]
    return [op for op in ops if op.method.upper() != "DELETE"]


def _bound_generation(case) -> None:
    body = case.body
    if isinstance(body, dict) and ("messages" in body or "prompt" in body):
        if not isinstance(body.get("max_tokens"), int) or body["max_tokens"] > MAX_TOKENS:
            body["max_tokens"] = MAX_TOKENS
        body.pop("n", None)
    if isinstance(body, dict) and "input" in body:  # POST /v1/responses
        if not isinstance(body.get("max_output_tokens"), int) \
                or body["max_output_tokens"] > MAX_TOKENS:
            body["max_output_tokens"] = MAX_TOKENS


def test_spec_documents_the_request_bodies(server):
    paths = httpx.get(server.base_url + "/openapi.json").json()["paths"]
    chat = paths["/v1/chat/completions"]["post"]["requestBody"]["content"]
    props = chat["application/json"]["schema"]["properties"]
    assert {"model", "messages", "control"} <= set(props)
    control = props["control"]["anyOf"][0]["properties"]
    assert {"steer", "refusal", "capture", "projection_clamp"} <= set(control)  # installed too
    assert control["projection_clamp"]["additionalProperties"] is False


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE],
                         ids=["valid", "invalid"])
def test_no_request_gets_a_5xx(server, mode):
    ops = _operations(server)
    assert {f"{op.method.upper()} {op.path}" for op in ops} >= {
        "POST /v1/chat/completions", "POST /v1/completions", "POST /v1/responses",
        "POST /v1/control/vectors"}
    seen: dict[str, int] = {}
    with httpx.Client(base_url=server.base_url, timeout=120) as client:
        for op in ops:
            try:
                _fuzz(op, mode, client, server.base_url, seen)()
            except Unsatisfiable:  # nothing to make invalid (e.g. GET /health)
                assert mode == GenerationMode.NEGATIVE and op.method.upper() == "GET"
    if mode == GenerationMode.POSITIVE:
        assert len(seen) == len(ops)  # every operation was exercised
    assert {"POST /v1/chat/completions", "POST /v1/completions",
            "POST /v1/control/vectors"} <= set(seen)


def _fuzz(op, mode, client: httpx.Client, base_url: str, seen: dict[str, int]):
    """A hypothesis test of one operation: every generated request answers below 500."""

    @given(case=op.as_strategy(generation_mode=mode))
    @settings(max_examples=EXAMPLES, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    def check(case):
        _bound_generation(case)
        kwargs = case.as_transport_kwargs(base_url=base_url)
        kwargs.pop("cookies", None)
        if isinstance(kwargs.get("data"), (bytes, str)):
            kwargs["content"] = kwargs.pop("data")  # raw (invalid) bodies
        kwargs["headers"] = {**(kwargs.get("headers") or {}),
                             "Authorization": f"Bearer {ADMIN_KEY}"}
        r = client.request(**kwargs)
        seen[op.label] = seen.get(op.label, 0) + 1
        assert r.status_code < 500, (op.label, case.body, r.text[:500])

    return check
