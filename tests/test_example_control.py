"""The example control (examples/projection-clamp), installed by `make test` as an
outside package would be, end to end through the server: discovered through its entry
point, validated before the engine, applied per request in a shared batch, reported
from the worker's step messages. Compiled mode: tests/test_compiled_mode.py."""

from __future__ import annotations

import httpx
import pytest

from chat_api import ask, ask_together_shared, body_for, text
from conftest import API_KEY
from prompts import NEUTRAL

pytestmark = pytest.mark.engine

WIDE = {"projection_clamp": {"vector": "joyful", "lo": -1e6, "hi": 1e6}}
# Pin the stream's joyful component far above anything the model writes (its norm in
# the middle layers is a few units), so the text must change.
PINNED = {"projection_clamp": {"vector": "joyful", "lo": 40.0, "hi": 40.0}}


def test_the_example_is_an_installed_plugin_not_part_of_vsteer():
    import vsteer_projection_clamp

    from vsteer.plugins.control_registry import installed_controls

    assert "projection_clamp" in installed_controls()
    assert "examples/projection-clamp" in vsteer_projection_clamp.__file__


def test_a_clamp_pins_the_stream_and_a_wide_band_changes_nothing(server, demo_vector):
    plain = text(ask(server, NEUTRAL[0]))
    assert text(ask(server, NEUTRAL[0], WIDE)) == plain  # within the band: untouched
    pinned = ask(server, NEUTRAL[0], PINNED)
    assert text(pinned) != plain
    rep, usage = pinned["control"]["projection_clamp"], pinned["usage"]
    assert rep["vector"] == "joyful" and rep["layers"] == demo_vector.layers
    # every token the model ran (the last sampled one never runs): prompt + completion - 1
    assert rep["tokens"] == usage["prompt_tokens"] + usage["completion_tokens"] - 1
    assert "errors" not in pinned["control"]


def test_clamped_and_unclamped_requests_share_steps_and_stay_apart(server, demo_vector):
    cases = [(NEUTRAL[1], WIDE), (NEUTRAL[1], PINNED), (NEUTRAL[2], WIDE)]
    solo = [text(ask(server, p, c)) for p, c in cases]
    together = ask_together_shared(server, cases)  # proven to share steps
    assert [text(r) for r in together] == solo
    assert solo[0] != solo[1]


def test_positions_generated_leaves_the_prompt_alone(server, demo_vector):
    gen = {"projection_clamp": {**PINNED["projection_clamp"], "positions": "generated"}}
    r = ask(server, NEUTRAL[0], gen)
    assert r["control"]["projection_clamp"]["tokens"] == r["usage"]["completion_tokens"] - 1


@pytest.mark.parametrize("clamp,code,param", [
    ({"vector": "joyful", "lo": 2.0, "hi": 1.0}, "conflicting_fields",
     "control.projection_clamp.lo"),
    ({"vector": "joyful"}, "missing_field", "control.projection_clamp"),
    ({"vector": "joyful", "hi": 1.0, "extra": 1}, "unknown_field",
     "control.projection_clamp.extra"),
    ({"vector": "nope", "hi": 1.0}, "unknown_vector", "control.projection_clamp.vector"),
    ({"vector": "joyful", "hi": 1.0, "layers": [2]}, "layer_not_in_artifact",
     "control.projection_clamp.layers"),
])
def test_bad_clamps_are_coded_400s_before_the_engine(server, demo_vector, clamp, code,
                                                     param):
    before = server.metric("vllm:prompt_tokens_total")
    r = httpx.post(server.base_url + "/v1/chat/completions", timeout=60,
                   json=body_for("hi", {"projection_clamp": clamp}),
                   headers={"Authorization": f"Bearer {API_KEY}"})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert (err["code"], err["param"]) == (code, param)
    assert server.metric("vllm:prompt_tokens_total") == before
