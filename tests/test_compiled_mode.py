"""Invariant 6: controls work in vLLM's default compiled mode, not only enforce_eager.

A plain Python patch is traced once and then silently stops applying; here the first
generate calls trigger tracing with nobody steered, and later calls must still steer
exactly the request that asks, leaving its batch neighbours untouched.
"""

import pytest

from vsteer.probe.dataset import prompt_for

from chat_api import ask, ask_together, body_for, post, text
from conftest import PROBE, SAE, run_helper, start_server
from prompts import GEO_QUESTIONS
from stream_reference import decode_capture

pytestmark = pytest.mark.engine


def test_steering_applies_per_request_after_compilation(model_dir, demo_vector, artifacts):
    out = run_helper("compiled_mode.py", {
        "model": str(model_dir), "artifacts": str(artifacts), "vector": "joyful",
        "prompts": ["The capital of France is", "My favourite food is", "Once upon a time"],
        "max_tokens": 12,
    }, env={"VLLM_DISABLE_COMPILE_CACHE": "1"})
    assert out["compiled"] and not out["runtime_eager"]
    plain, pos, neg = out["plain"], out["steer_pos"], out["steer_neg"]
    assert pos[1] != plain[1] and neg[1] != plain[1] and pos[1] != neg[1]
    for run in (pos, neg, out["plain_again"]):
        assert run[0] == plain[0] and run[2] == plain[2]  # neighbours untouched
    assert out["plain_again"] == plain  # nothing sticks after steered requests end
    assert out["steered_tokens"] > 0


@pytest.fixture(scope="module")
def compiled_server(model_dir, artifacts, refusal_artifacts, probe_artifacts,
                    tmp_path_factory):
    srv = start_server(model_dir, artifacts, tmp_path_factory.mktemp("compiled"),
                       eager=False)
    yield srv
    srv.stop()


PROMPTS = [prompt_for(q) for q in GEO_QUESTIONS]
GUARD_ON = {"refusal": {"mode": "guard", "direction": "refusal", "threshold": -1.0}}
GUARD_OFF = {"refusal": {"mode": "guard", "direction": "refusal", "threshold": 1.0}}
FORCE = {"refusal": {"mode": "force", "direction": "refusal"}}
PER_TOKEN = {"hallucination": {"probe": PROBE, "per_token": True}}
MITIGATE = {"hallucination": {"probe": PROBE, "action": "mitigate", "threshold": 0.0,
                              "scale": 2.0}}
def assert_same_stream(comp: dict, eager: dict) -> None:
    """The compiled server's captured stream equals the eager one's (fp32 tolerance)."""
    import numpy as np

    a, b = (decode_capture(r["control"]["capture"]) for r in (comp, eager))
    assert a.shape == b.shape
    assert np.abs(a - b).max() <= 2e-3 * np.abs(b).max()


STORY = "Write a short story about a lighthouse keeper."
ABSTAIN = {"hallucination": {"probe": PROBE, "action": "abstain", "threshold": 0.0}}


def test_guards_and_probes_run_as_table_jobs_in_compiled_mode(server, compiled_server):
    """Guards, linear probes and per-token scores run inside the compiled graph (the
    job-table op, no Python per step): their scores equal the eager server's, and their
    actions take effect."""
    p, q = PROMPTS[1], "Write a haiku about the first snow of winter"
    assert ", compiled forward," in compiled_server.log.read_text()
    for control in (GUARD_ON, GUARD_OFF, PER_TOKEN, MITIGATE, ABSTAIN):
        prompt = q if "refusal" in control else p
        eager, comp = ask(server, prompt, control), ask(compiled_server, prompt, control)
        kind = next(iter(control))
        e, c = eager["control"][kind], comp["control"][kind]
        assert c["score"] == pytest.approx(e["score"], abs=2e-3), control
        for k in ("triggered", "action_taken"):
            assert c.get(k) == e.get(k), (control, k)
        if "token_scores" in e:
            assert c["token_scores"] == pytest.approx(e["token_scores"][:len(c["token_scores"])],
                                                      abs=2e-3)
    fired, plain = ask(compiled_server, q, GUARD_ON), ask(compiled_server, q)
    assert fired["control"]["refusal"]["triggered"] is True
    assert text(fired) == text(ask(compiled_server, q, FORCE)) != text(plain)
    assert text(ask(compiled_server, q, GUARD_OFF)) == text(plain)
    assert text(ask(compiled_server, p, MITIGATE)) != text(ask(compiled_server, p))


def test_mixed_batch_in_compiled_mode_equals_solo_runs(compiled_server):
    q = "Explain how a rainbow forms"
    cases = [(PROMPTS[0], None), (q, GUARD_ON), (PROMPTS[2], PER_TOKEN), (q, GUARD_OFF),
             (PROMPTS[0], MITIGATE), (PROMPTS[3], ABSTAIN), (q, None)]
    solo = [text(ask(compiled_server, p, c)) for p, c in cases]
    assert ask_together(compiled_server, cases) == solo


def test_the_example_control_runs_inside_compiled_graphs(server, compiled_server,
                                                         demo_vector):
    """The installed projection clamp (examples/projection-clamp) brings its own op;
    traced once with nobody clamped, it still clamps exactly the request that asks, and
    its tokens equal the eager server's."""
    wide = {"projection_clamp": {"vector": "joyful", "lo": -1e6, "hi": 1e6}}
    pinned = {"projection_clamp": {"vector": "joyful", "lo": 40.0, "hi": 40.0}}
    p = PROMPTS[0]
    plain = text(ask(compiled_server, p))
    assert text(ask(compiled_server, p, wide)) == plain
    comp, eager = ask(compiled_server, p, pinned), ask(server, p, pinned)
    assert text(comp) != plain and text(comp) == text(eager)
    usage = comp["usage"]
    assert comp["control"]["projection_clamp"]["tokens"] == (
        usage["prompt_tokens"] + usage["completion_tokens"] - 1)
    cases = [(p, wide), (p, pinned), (PROMPTS[1], None)]
    solo = [text(ask(compiled_server, q, c)) for q, c in cases]
    assert ask_together(compiled_server, cases) == solo


def test_capture_runs_inside_compiled_graphs(server, compiled_server):
    """control.capture copies rows into a preallocated buffer from inside the traced
    graph: the compiled server's capture equals the eager server's."""
    cap = {"capture": {"layers": [2, 14], "positions": "all"}}
    comp, eager = ask(compiled_server, PROMPTS[2], cap), ask(server, PROMPTS[2], cap)
    assert text(comp) == text(eager)
    assert_same_stream(comp, eager)
    usage = comp["usage"]
    assert comp["control"]["capture"]["shape"] == [
        2, usage["prompt_tokens"] + usage["completion_tokens"] - 1, 576]


def test_position_windows_steer_the_same_positions_in_compiled_graphs(server,
                                                                       compiled_server,
                                                                       demo_vector):
    """A request steered on a prompt window and a generated window: the compiled
    server's stream (captured at the steering layer and after) equals the eager
    server's, so the rows the windows name reach the traced op unchanged (the eager
    server's states are checked against transformers in test_position_windows_server)."""

    control = {"steer": [{"vector": "joyful", "scale": 4.0, "layers": [7],
                          "positions": {"prompt": [1, -2]}},
                         {"vector": "joyful", "scale": -4.0, "layers": [7],
                          "positions": {"generated": [1, 3]}}],
               "capture": {"layers": [7, 12], "positions": "all"}}
    comp, eager = ask(compiled_server, PROMPTS[2], control), ask(server, PROMPTS[2], control)
    assert text(comp) == text(eager)
    assert_same_stream(comp, eager)


def test_sae_features_and_monitor_run_inside_compiled_graphs(server, compiled_server, sae):
    """`features` (an in-forward op) and `monitor` (rows staged inside the forward,
    encoded after it): the compiled server's stream and report equal the eager one's."""
    control = {"features": [{"sae": SAE, "feature": 5, "value": 6.0},
                            {"sae": SAE, "feature": 11, "op": "clamp", "value": 2.0,
                             "positions": {"generated": [0, 2]}}],
               "monitor": {"sae": SAE, "top_k": 4, "per_token": True},
               "capture": {"layers": [7, 12], "positions": "all"}}
    comp, eager = ask(compiled_server, PROMPTS[0], control), ask(server, PROMPTS[0], control)
    assert text(comp) == text(eager)
    assert_same_stream(comp, eager)
    mc, me = comp["control"]["monitor"], eager["control"]["monitor"]
    assert [t["features"] for t in mc["tokens"]] == [t["features"] for t in me["tokens"]]
    assert comp["control"]["features"]["tokens"] == eager["control"]["features"]["tokens"] > 0


def test_react_fires_and_steers_the_same_inside_compiled_graphs(server, compiled_server,
                                                                 sae, demo_vector):
    """`react_apply` runs at every layer of the traced graph: the condition's device
    state (streak, latch, firing position) and the action it gates give the compiled
    server the same firing token, reply and stream as the eager one."""
    import numpy as np

    for feature in range(1, 32):  # one that fires mid-reply on this prompt
        control = {"react": {"when": {"sae": SAE, "feature": feature}, "min_tokens": 2,
                             "action": "steer", "steer": {"vector": "joyful", "scale": 6.0,
                                                          "layers": [6, 7, 8]}},
                   "capture": {"layers": [8, 12], "positions": "all"}}
        eager = ask(server, STORY, control)
        if (eager["control"]["react"]["fired_at"] or 0) >= 2:
            break
    comp = ask(compiled_server, STORY, control)
    assert text(comp) == text(eager)
    rc, re_ = comp["control"]["react"], eager["control"]["react"]
    assert rc["fired_at"] == re_["fired_at"] and rc["fired"]
    assert np.allclose(rc["scores"], re_["scores"], rtol=1e-3, atol=1e-4)
    assert_same_stream(comp, eager)


def test_early_exit_observes_the_same_inside_compiled_graphs(server, compiled_server,
                                                            exit_artifacts):
    """Early exit is an installed control: its checks run through the one op the
    installed controls share, so observe reads the same exit layers as in eager mode;
    `exit` (layer skipping) is refused where the worker says it cannot skip."""
    from conftest import EXIT

    observe = {"early_exit": {"mode": "observe", "predictor": EXIT, "threshold": 0.5}}
    comp, eager = ask(compiled_server, STORY, observe), ask(server, STORY, observe)
    assert text(comp) == text(eager)
    a, b = comp["control"]["early_exit"], eager["control"]["early_exit"]
    assert a["exit_layers"] == b["exit_layers"] and a["tokens"] == b["tokens"] > 0
    assert 0 < a["exited_tokens"] < a["tokens"]  # the threshold separates tokens
    r = post(compiled_server, body_for(STORY, {"early_exit": {"mode": "exit",
                                                              "predictor": EXIT}}))
    assert r.status_code == 400 and r.json()["error"]["code"] == "not_supported"
