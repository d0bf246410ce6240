"""Early exit through the real server (eager fp32 engine; predictor `smol-exit`, made
by the real CLI in the session fixture exit_artifacts)."""

from __future__ import annotations

import pytest

from chat_api import ask, ask_together, body_for, post, text
from conftest import EXIT
from exit_reference import ExitReplay

pytestmark = pytest.mark.engine
PROMPTS = ["Explain how a rainbow forms.", "Write a haiku about autumn leaves.",
           "What is the Pythagorean theorem?"]
LOGPROB_TOL = 2e-3  # fp32 engine vs fp32 transformers
NUM_LAYERS = 30


def early(**kw) -> dict:
    return {"early_exit": {"predictor": EXIT, **kw}}


def exit_report(resp: dict) -> dict:
    return resp["control"]["early_exit"]


def test_observe_never_changes_tokens(server):
    for p in PROMPTS:
        plain = ask(server, p)
        # threshold 0: every token "could exit" at the first candidate layer, so the
        # observer scores and reads the lens on every token; the output must not move
        seen = ask(server, p, early(mode="observe", threshold=0.0))
        assert text(seen) == text(plain)
        rep = exit_report(seen)
        n = seen["usage"]["completion_tokens"]
        assert rep["tokens"] == len(rep["exit_layers"]) == n
        assert rep["exited_tokens"] == n
        assert sum(rep["histogram"].values()) == n
        assert 0.0 < rep["saved_fraction"] < 1.0
        assert 0.0 <= rep["agreement"] <= 1.0


def test_observe_at_the_calibrated_target_reports_a_distribution(server):
    rep = exit_report(ask(server, PROMPTS[0], early(mode="observe")))
    assert rep["target_agreement"] == 0.98
    assert all(int(la) in rep["layers"] or int(la) == NUM_LAYERS - 1
               for la in rep["histogram"])


def test_unreachable_threshold_equals_the_full_model(server):
    for p in PROMPTS:
        full = ask(server, p)
        never = ask(server, p, early(mode="exit", threshold=1.0))
        assert text(never) == text(full)
        rep = exit_report(never)
        assert rep["exited_tokens"] == 0
        assert rep["exit_layers"] == [NUM_LAYERS - 1] * rep["tokens"]


def test_exit_mode_skips_layers(server):
    rep = exit_report(ask(server, PROMPTS[0], early(mode="exit", threshold=0.0)))
    # every decode step exits at the first candidate layer; the first token comes from
    # prefill, which never exits
    assert rep["exit_layers"][0] == NUM_LAYERS - 1
    assert set(rep["exit_layers"][1:]) == {min(rep["layers"])}
    assert rep["agreement"] is None  # not measured in exit mode


def test_mixed_batch_non_exit_requests_equal_their_solo_runs(server):
    solo = [text(ask(server, p)) for p in PROMPTS]
    cases = [(PROMPTS[0], None), (PROMPTS[1], early(mode="exit", threshold=0.0)),
             (PROMPTS[2], None), (PROMPTS[0], early(mode="exit", threshold=0.0)),
             (PROMPTS[1], early(mode="observe", threshold=0.0))]
    got = ask_together(server, cases)
    assert got[0] == solo[0]
    assert got[2] == solo[2]
    assert got[4] == solo[1]  # observe is not exit


@pytest.fixture(scope="module")
def replay(model_dir):
    return ExitReplay(str(model_dir))


def _exit_run(server, threshold: float) -> tuple[list[int], list[int], list[float], list[int]]:
    """(prompt ids, generated ids, their logprobs, per-token exit layers)."""
    r = post(server, body_for(PROMPTS[0], early(mode="exit", threshold=threshold),
                              logprobs=True, return_token_ids=True))
    assert r.status_code == 200, r.text
    data = r.json()
    choice = data["choices"][0]
    got = [c["logprob"] for c in choice["logprobs"]["content"]]
    layers = exit_report(data)["exit_layers"]
    assert len(layers) == len(choice["token_ids"]) == len(got)
    return data["prompt_token_ids"], choice["token_ids"], got, layers


def _reads_a_filled_layer(layers: list[int]) -> bool:
    """Some step runs deeper than an earlier step exited: it reads filled K/V."""
    return any(b > a for i, a in enumerate(layers) for b in layers[i + 1:])


def _assert_close(got: list[float], ref: list[float], layers: list[int]) -> None:
    for t, (a, b) in enumerate(zip(got, ref, strict=True)):
        assert abs(a - b) < LOGPROB_TOL * max(1.0, abs(b)), (t, a, b, layers[: t + 1])


def test_exit_on_every_step_reads_the_exit_layer_head(server, replay):
    prompt, gen, got, layers = _exit_run(server, 0.0)
    assert sum(la < NUM_LAYERS - 1 for la in layers) == len(gen) - 1
    _assert_close(got, replay.logprobs(prompt, gen, layers), layers)


def test_kv_cache_of_skipped_layers_is_filled_from_the_exit_state(server, replay):
    """After exited tokens, a full-depth token attends to the skipped layers' K/V: the
    engine's log-probabilities equal a transformers rebuild of the documented cache,
    and differ from a cache holding full-depth K/V there."""
    for threshold in (0.3, 0.5, 0.7, 0.85, 0.95):
        prompt, gen, got, layers = _exit_run(server, threshold)
        if _reads_a_filled_layer(layers):
            break
    else:
        pytest.fail("no threshold gave an exit followed by a deeper step")
    _assert_close(got, replay.logprobs(prompt, gen, layers), layers)
    wrong = replay.logprobs(prompt, gen, layers, kv_from="full")
    assert max(abs(a - b) for a, b in zip(got, wrong, strict=True)) > 10 * LOGPROB_TOL


@pytest.mark.parametrize("control, needle", [
    ({"mode": "exit"}, "predictor is required"),
    ({"mode": "observe", "predictor": "nope"}, "unknown exit predictor"),
    ({**early(mode="exit")["early_exit"], "threshold": 0.5, "target_agreement": 0.9},
     "not both"),
    ({**early(mode="exit")["early_exit"], "target_agreement": 0.9999},
     "above the highest calibrated target"),
    ({**early(mode="exit")["early_exit"], "threshold": 1.5}, "threshold"),
    ({**early(mode="sometimes")["early_exit"]}, "mode"),
])
def test_bad_early_exit_controls_are_400(server, control, needle):
    r = post(server, body_for(PROMPTS[0], {"early_exit": control}))
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert needle in err["message"]
    assert err["param"].startswith("control.early_exit")


def test_early_exit_metrics(server):
    before = server.metric("vsteer_early_exit_tokens_total")
    rep = exit_report(ask(server, PROMPTS[1], early(mode="observe", threshold=0.0)))
    assert server.metric("vsteer_early_exit_tokens_total") - before == rep["tokens"] > 0


def test_exit_with_per_token_scores_says_which_tokens_went_unscored(server, probe_artifacts,
                                                                    artifacts):
    """A step that stops before the per-token probe's layer cannot score its token: that
    token's score is null (never a stale one) and `control.errors` says why, coded."""
    from vsteer.artifacts import ArtifactStore

    from conftest import PROBE

    token_layer = ArtifactStore(artifacts).get("probe", PROBE).value.token_layer
    control = {**early(mode="exit", threshold=0.0),
               "hallucination": {"probe": PROBE, "per_token": True}}
    data = ask(server, PROMPTS[0], control)
    layers = exit_report(data)["exit_layers"]
    scores = data["control"]["hallucination"]["token_scores"]
    assert len(scores) == len(layers) == data["usage"]["completion_tokens"]
    assert min(layers) < token_layer  # some token left before the probe's layer
    for la, score in zip(layers, scores, strict=True):
        assert (score is None) == (la < token_layer), (la, score)
    assert [e["code"] for e in data["control"]["errors"]] == ["not_scored"]
