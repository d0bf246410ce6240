"""Hallucination probes through the real server (probe `geo-probe`, made by the real CLI
in the session fixture probe_artifacts)."""

from __future__ import annotations

import json

import httpx
import numpy as np
import pytest

from vsteer.probe.dataset import prompt_for

from chat_api import ask, ask_together, body_for, post, text
from conftest import API_KEY, PROBE, TENANT_KEY
from prompts import GEO_QUESTIONS

pytestmark = pytest.mark.engine
PROMPTS = [prompt_for(q) for q in GEO_QUESTIONS]
TOL = 2e-3  # fp32 engine vs fp32 transformers


def hallu(**kw) -> dict:
    return {"hallucination": {"probe": PROBE, **kw}}


@pytest.fixture(scope="module")
def probe(store):
    return store.get("probe", PROBE).value


@pytest.fixture(scope="module")
def offline(model_dir, probe):
    """Per prompt: (pre-decoding score, score of the first generated token), computed in
    transformers from the same artifact."""
    from vsteer.probe.features import extract_features
    from vsteer.refusal.hf_model import HFModel

    m = HFModel(str(model_dir))
    rows = [{"prompt": p, "completion_token_ids": [0]} for p in PROMPTS]
    f = extract_features(m, rows, [probe.token_layer])
    pooled = f.mean if probe.pooling == "mean" else f.last
    out = {}
    for i, p in enumerate(PROMPTS):
        z = float(f.tokens[i, 0] @ probe.token_weight) + probe.token_bias
        out[p] = (probe.score(pooled[i, probe.layer]), 1 / (1 + np.exp(-z)))
    return out


def test_in_server_scores_equal_offline_scores(server, offline):
    for p in PROMPTS:
        r = ask(server, p, hallu(per_token=True))
        h = r["control"]["hallucination"]
        score, first_token = offline[p]
        assert h["score"] == pytest.approx(score, abs=TOL), p
        assert len(h["token_scores"]) == r["usage"]["completion_tokens"]
        assert h["token_scores"][0] == pytest.approx(first_token, abs=TOL), p
        assert all(0.0 <= s <= 1.0 for s in h["token_scores"])
        assert h["triggered"] == (h["score"] >= h["threshold"])


def test_annotate_never_changes_tokens(server):
    for p in PROMPTS:
        plain = ask(server, p)
        r = ask(server, p, hallu(threshold=0.0))  # fires on every prompt
        assert text(r) == text(plain)
        h = r["control"]["hallucination"]
        assert h["triggered"] is True and h["action_taken"] == "none"


def test_abstain_generates_nothing_past_the_probe(server):
    from vsteer.plugins.hallucination_control import ABSTAIN_TEXT

    p = PROMPTS[0]
    r = ask(server, p, hallu(action="abstain", threshold=0.0))
    assert text(r) == ABSTAIN_TEXT
    assert r["choices"][0]["finish_reason"] == "content_filter"
    assert r["usage"]["completion_tokens"] == 1  # its end-of-sequence token, nothing else
    assert r["control"]["hallucination"]["action_taken"] == "abstained"
    score = r["control"]["hallucination"]["score"]
    assert score < 1.0
    kept = ask(server, p, hallu(action="abstain", threshold=(score + 1) / 2))
    assert text(kept) == text(ask(server, p))  # below its threshold: a normal answer
    assert kept["control"]["hallucination"]["action_taken"] == "none"


def test_max_error_abstains_at_the_probes_risk_threshold(server, probe):
    """The server's threshold for max_error is the conformal rule's on the artifact's
    calibration set, and it abstains exactly when the score reaches it."""
    from vsteer.plugins.hallucination_control import NEVER
    from vsteer.probe.conformal import UnattainableRisk, risk_threshold

    def rule(a):
        try:
            return risk_threshold(probe.conformal_scores, probe.conformal_wrong, a)
        except UnattainableRisk:
            return None

    # the smallest target this calibration set supports: a finite threshold
    a = next(x for x in np.arange(0.3, 0.99, 0.05).round(2) if rule(x) is not None)
    want = rule(a)
    threshold = min(want.threshold, NEVER)
    for p in PROMPTS:
        r = ask(server, p, hallu(action="abstain", max_error=float(a)))
        h = r["control"]["hallucination"]
        assert h["threshold"] == pytest.approx(threshold)
        assert h["max_error"] == pytest.approx(a)
        assert h["risk_calibration"] == {"questions": want.calibration_size,
                                         "bound": pytest.approx(want.bound),
                                         "coverage": pytest.approx(want.coverage)}
        assert (h["action_taken"] == "abstained") == (h["score"] >= threshold)


def _stream(server, body: dict) -> list[dict]:
    chunks = []
    with httpx.stream("POST", server.base_url + "/v1/chat/completions", json=body,
                      headers={"Authorization": f"Bearer {API_KEY}"}, timeout=300) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                chunks.append(json.loads(line[len("data: "):]))
    return chunks


def test_streaming_abstain_and_per_token_scores(server):
    from vsteer.plugins.hallucination_control import ABSTAIN_TEXT

    p = PROMPTS[1]
    chunks = _stream(server, body_for(p, hallu(action="abstain", threshold=0.0), stream=True))
    content = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks
                      if c.get("choices"))
    assert content == ABSTAIN_TEXT
    assert [c["choices"][0]["finish_reason"] for c in chunks
            if c.get("choices") and c["choices"][0].get("finish_reason")] == ["content_filter"]
    assert chunks[-1]["control"]["hallucination"]["action_taken"] == "abstained"

    whole = ask(server, p, hallu(per_token=True))["control"]["hallucination"]["token_scores"]
    chunks = _stream(server, body_for(p, hallu(per_token=True), stream=True))
    streamed = [s for c in chunks if c.get("choices")
                for s in c.get("control", {}).get("hallucination", {}).get("token_scores", [])]
    assert streamed == pytest.approx(whole, abs=1e-6)
    assert not any("usage" in c for c in chunks)  # continuous usage was ours, not asked for
    assert chunks[-1]["control"]["hallucination"]["token_scores"] == pytest.approx(whole)


def test_mixed_batch_outputs_equal_solo_runs(server):
    cases = [(PROMPTS[0], None), (PROMPTS[1], hallu(action="abstain", threshold=0.0)),
             (PROMPTS[2], hallu(per_token=True)), (PROMPTS[3], None),
             (PROMPTS[0], hallu(action="mitigate", threshold=0.0, scale=2.0)),
             (PROMPTS[2], None), (PROMPTS[3], hallu(action="abstain", threshold=0.0))]
    solo = [text(ask(server, p, c)) for p, c in cases]
    assert ask_together(server, cases) == solo


def test_mitigate_steers_only_when_the_probe_fires(server):
    p = PROMPTS[3]
    plain = text(ask(server, p))
    fired = ask(server, p, hallu(action="mitigate", threshold=0.0, scale=2.0))
    assert fired["control"]["hallucination"]["action_taken"] == "mitigated"
    assert text(fired) != plain
    score = fired["control"]["hallucination"]["score"]
    held = ask(server, p, hallu(action="mitigate", threshold=(score + 1) / 2, scale=2.0))
    assert held["control"]["hallucination"]["action_taken"] == "none"
    assert text(held) == plain


@pytest.fixture(scope="module")
def bad_probes(store, probe):
    """`alien`: the probe for a model with another hidden size and more layers;
    `tokenless`: no per-token probe."""
    from dataclasses import replace

    from vsteer.artifacts import HallucinationProbe, ModelFingerprint

    fp = probe.fingerprint
    big = ModelFingerprint(fp.architecture, fp.hidden_size * 2, fp.num_layers + 10)
    alien = HallucinationProbe(
        layer=fp.num_layers + 5, pooling="last", probe_type="linear",
        tensors={"weight": np.ones(big.hidden_size, np.float32)}, bias=0.0, threshold=0.5,
        truth=np.zeros((big.num_layers, big.hidden_size), np.float32),
        mitigate_layers=[fp.num_layers + 6], fingerprint=big)
    store.write_bytes("probe", "alien", alien.to_safetensors_bytes(), overwrite=True)
    tokenless = replace(probe, token_layer=-1, token_weight=None)
    store.write_bytes("probe", "tokenless", tokenless.to_safetensors_bytes(), overwrite=True)
    uncalibrated = replace(probe, conformal_scores=None, conformal_wrong=None)
    store.write_bytes("probe", "uncalibrated", uncalibrated.to_safetensors_bytes(),
                      overwrite=True)


@pytest.mark.parametrize(("control", "status", "code", "param"), [
    ({"probe": "nope"}, 400, "unknown_probe", "control.hallucination.probe"),
    ({"probe": "alien"}, 400, "wrong_model", "control.hallucination.probe"),
    ({"probe": "tokenless", "per_token": True}, 400, None, "control.hallucination.per_token"),
    ({"probe": PROBE, "threshold": 1.5}, 400, None, "control.hallucination.threshold"),
    ({"probe": PROBE, "action": "annotate", "scale": 2.0}, 400, None,
     "control.hallucination.scale"),
    ({"probe": PROBE, "action": "mitigate", "scale": 1e6}, 400, None,
     "control.hallucination.scale"),
    ({"probe": PROBE, "action": "guess"}, 400, None, "control.hallucination.action"),
    ({"probe": PROBE, "action": "abstain", "max_error": 0.2, "threshold": 0.5}, 400,
     "conflicting_fields", "control.hallucination.max_error"),
    ({"probe": PROBE, "action": "annotate", "max_error": 0.2}, 400, "field_not_applicable",
     "control.hallucination.max_error"),
    ({"probe": "uncalibrated", "action": "abstain", "max_error": 0.2}, 400,
     "probe_not_calibrated", "control.hallucination.max_error"),
    ({"probe": PROBE, "action": "abstain", "max_error": 1e-4}, 400, "max_error_unattainable",
     "control.hallucination.max_error"),
    ({"probe": PROBE, "action": "abstain", "max_error": 1.0}, 400, None,
     "control.hallucination.max_error"),
])
def test_bad_probe_requests_fail_before_the_engine(server, bad_probes, control, status, code,
                                                   param):
    before = server.metric("vsteer_controlled_requests_total")
    r = post(server, body_for(PROMPTS[0], {"hallucination": control}))
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["param"] == param
    if code:
        assert err["code"] == code
    assert server.metric("vsteer_controlled_requests_total") == before  # nothing enqueued


@pytest.mark.parametrize("extra", [{"min_tokens": 4}, {"ignore_eos": True}])
def test_abstain_refuses_sampling_that_would_not_stop(server, extra):
    r = post(server, body_for(PROMPTS[0], hallu(action="abstain"), **extra))
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == "control.hallucination.action"


def test_tenant_may_only_use_allowed_probes(server):
    r = post(server, body_for(PROMPTS[0], hallu()), key=TENANT_KEY)
    assert r.status_code == 403 and r.json()["error"]["code"] == "artifact_not_allowed"


def test_metrics_count_probe_scores_and_actions(server):
    before = server.metric("vsteer_hallucination_actions_total")
    n0 = server.metric("vsteer_hallucination_score_count")
    ask(server, PROMPTS[0], hallu(action="abstain", threshold=0.0))
    assert server.metric("vsteer_hallucination_actions_total") == before + 1
    assert server.metric("vsteer_hallucination_score_count") == n0 + 1
    text_ = httpx.get(server.base_url + "/metrics").text
    assert 'vsteer_hallucination_actions_total{action="abstain",taken="abstained"}' in text_
