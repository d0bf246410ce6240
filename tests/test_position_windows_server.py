"""Position windows through the server (issue 18): a steering entry on prompt tokens
[a, b), generated tokens [a, b) or the last prompt token moves exactly those positions.

Evidence: the request also captures the stream (`control.capture`, all positions) at the
steering layer and a later one; transformers, fed the same token ids with `s·v` added
after that layer at exactly the window's positions, gives the same states. At the
steering layer that is the unsteered state plus `s·v` inside the window and the
unsteered state outside it; the later layer shows the window's effect carried forward.
Compiled mode: tests/test_compiled_mode.py."""

from __future__ import annotations

import httpx
import numpy as np
import pytest

import stream_reference
from chat_api import ask, ask_together_shared, text
from conftest import API_KEY, MODEL_NAME
from prompts import NEUTRAL
from stream_reference import add_at, decode_capture, edited_states, fed_ids

pytestmark = pytest.mark.engine

LAYER, LATER = 7, 12  # `joyful` has directions at 6-8; steer at 7 only
SCALE = 4.0
PROMPT = "The weather this morning was very"  # 6 tokens


def windowed(positions) -> dict:
    return {"steer": [{"vector": "joyful", "scale": SCALE, "layers": [LAYER],
                       "positions": positions}],
            "capture": {"layers": [LAYER, LATER], "positions": "all"}}


def complete(server, control: dict) -> dict:
    return stream_reference.complete(server, PROMPT, control)


def steered_reference(hf_model, ids: list[int], vector: np.ndarray, where: list[int]
                      ) -> list[np.ndarray]:
    """hidden_states[l + 1] at LAYER and LATER with SCALE·vector added after LAYER at
    positions `where`."""
    return edited_states(hf_model, ids, {LAYER: add_at(SCALE * vector, where)},
                         [LAYER, LATER])


def assert_close(got: np.ndarray, ref: list[np.ndarray]) -> None:
    stream_reference.assert_close(got, ref, [LAYER, LATER])


@pytest.mark.parametrize(("positions", "where"), [
    ({"prompt": [1, -2]}, lambda p: list(range(1, p - 2))),
    ({"prompt": [-2, None]}, lambda p: [p - 2, p - 1]),
    ("last", lambda p: [p - 1]),
    ({"generated": [1, 3]}, lambda p: [p + 1, p + 2]),
    ("generated", lambda p: list(range(p, p + 5))),
])
def test_a_window_steers_exactly_its_positions(server, hf_model, demo_vector, positions,
                                               where):
    data = complete(server, windowed(positions))
    choice = data["choices"][0]
    pids, gids = choice["prompt_token_ids"], choice["token_ids"]
    assert len(pids) == 6 and len(gids) == 6
    assert data["control"]["steer"][0]["positions"] == positions  # echoed as sent
    ids = fed_ids(data)
    got = decode_capture(data["control"]["capture"])
    at = where(len(pids))
    ref = steered_reference(hf_model, ids, demo_vector.directions[LAYER], at)
    plain = steered_reference(hf_model, ids, demo_vector.directions[LAYER], [])[0]
    moved = np.linalg.norm(got[0] - plain, axis=1) / np.linalg.norm(plain, axis=1)
    assert_close(got, ref)
    # and the window is not vacuous: outside it the steering layer is the plain model's,
    # inside it is s·v away from it
    inside = np.zeros(len(ids), bool)
    inside[at] = True
    assert moved[~inside].max() < 2e-3 and moved[inside].min() > 0.05, moved.round(3)


def test_windowed_and_plain_requests_in_one_batch_equal_solo_runs(server, demo_vector):
    cases = [(NEUTRAL[0], {"steer": [{"vector": "joyful", "scale": 8.0,
                                      "positions": {"generated": [2, None]}}]}),
             (NEUTRAL[1], {"steer": [{"vector": "joyful", "scale": 8.0,
                                      "positions": {"prompt": [0, -1]}},
                                     {"vector": "joyful", "scale": -8.0,
                                      "positions": "last"}]}),
             (NEUTRAL[0], None)]
    solo = [text(ask(server, p, c)) for p, c in cases]
    together = ask_together_shared(server, cases)  # proven to share steps
    assert [text(r) for r in together] == solo
    assert solo[0] != solo[2]  # the generated window did steer


@pytest.mark.parametrize(("positions", "message"), [
    ({"generated": [-2, None]}, "count from the first generated token"),
    ({"prompt": [3, 1]}, "is empty"),
    ({"prompt": [1]}, "[a, b]"),
    ("middle", "must be one of"),
])
def test_a_malformed_window_is_a_400_naming_the_field(server, positions, message):
    before = server.metric("vllm:prompt_tokens_total")
    r = httpx.post(server.base_url + "/v1/completions", timeout=60, headers={
        "Authorization": f"Bearer {API_KEY}"}, json={
        "model": MODEL_NAME, "prompt": "hi", "max_tokens": 2, "control": {
            "steer": [{"vector": "joyful", "positions": positions}]}})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert (err["code"], err["param"]) == ("invalid_value", "control.steer[0].positions")
    assert message in err["message"]
    assert server.metric("vllm:prompt_tokens_total") == before
