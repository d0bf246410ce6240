"""`steer` is a control on the Control API (plugins/steer_control.py): registered through
the entry point, resolved by its own `resolve`, with no worker half: its entries reach
the worker as shared token-plan entries (`Resolution.steer`). Engine behaviour (the
steered stream) is covered by the server tests; this is the server half, no vLLM."""

from __future__ import annotations

import numpy as np
import pytest

from vsteer.artifacts import ArtifactStore, ModelFingerprint, SteeringVector
from vsteer.plugins.api import Control, Resolution, WorkerContext
from vsteer.plugins.control_registry import installed_controls
from vsteer.plugins.steer_control import Steer
from vsteer.server.control_resolver import ControlResolver
from vsteer.server.errors import APIError
from vsteer.server.openapi_bodies import ChatCompletionBody, json_body
from vsteer.wire import MAX_STEER_ENTRIES, steer_entry

FP = ModelFingerprint("LlamaForCausalLM", 8, 4)


@pytest.fixture
def store(tmp_path):
    s = ArtifactStore(tmp_path)
    rng = np.random.default_rng(0)
    for name, layers in (("a", [1, 2]), ("b", [0, 1, 2, 3])):
        dirs = {la: rng.standard_normal(8).astype(np.float32) for la in layers}
        s.save_vector(name, SteeringVector(dirs, FP, method="random"))
    return s


def resolve(store, control):
    return ControlResolver(store, FP, 8.0).resolve(control)


def test_steer_is_registered_through_the_entry_point_without_a_worker_half():
    c = installed_controls()["steer"]
    assert isinstance(c, Steer)
    ctx = WorkerContext(FP, 8, 4, 16, 4, None, None, True, 0)
    assert c.worker(ctx) is None


def test_entries_reach_the_shared_token_plan_in_the_requests_order(store):
    r = resolve(store, {"steer": [{"vector": "b", "scale": -2.0, "layers": [3, 1]},
                                  {"vector": "a", "scale": 0.0},
                                  {"vector": "a", "op": "ablate"}]})
    a, b = store.get_vector("a"), store.get_vector("b")
    assert list(r.wire.steer) == [
        steer_entry("b", b.sha256, str(b.path), [1, 3], -2.0),
        steer_entry("a", a.sha256, str(a.path), [1, 2], 1.0, "ablate")]
    assert r.wire.plugins == {}  # nothing of its own travels: no worker half
    assert r.applied["steer"][1] == {"vector": "a", "scale": 0.0, "layers": [1, 2],
                                     "positions": "all", "op": "add"}
    assert r.runs == ["steer"] and r.counted_controls == ["steer"]
    assert r.slot_keys == {e.key for e in r.wire.steer}


def test_scale_zero_everywhere_runs_nothing(store):
    r = resolve(store, {"steer": [{"vector": "a", "scale": 0.0}]})
    assert not r.active and r.runs == [] and r.counted_controls == []
    assert r.applied["steer"][0]["scale"] == 0.0


def test_a_window_of_positions_keeps_the_prefix_cache_private(store):
    shared = [resolve(store, {"steer": [{"vector": "a"}]}) for _ in range(2)]
    assert shared[0].cache_salt() == shared[1].cache_salt()
    windowed = [resolve(store, {"steer": [{"vector": "a", "positions": {"prompt": [0, 2]}}]})
                for _ in range(2)]
    assert windowed[0].cache_salt() != windowed[1].cache_salt()
    assert windowed[0].wire.steer[0].positions == "prompt"


@pytest.mark.parametrize("control, code, param", [
    ({"steer": [{"vector": "nope"}]}, "unknown_vector", "control.steer[0].vector"),
    ({"steer": [{"vector": "a", "layers": [9]}]}, "layer_out_of_range",
     "control.steer[0].layers"),
    ({"steer": [{"vector": "b"}, {"vector": "a", "layers": [0]}]}, "layer_not_in_artifact",
     "control.steer[1].layers"),
    ({"steer": [{"vector": "a", "scale": 99.0}]}, "scale_out_of_range",
     "control.steer[0].scale"),
    ({"steer": [{"vector": "a", "bogus": 1}]}, "unknown_field", "control.steer[0].bogus"),
    ({"steer": {"vector": "a"}}, None, "control.steer"),
    ({"steer": [{"vector": "a"}] * (MAX_STEER_ENTRIES + 1)}, None, "control.steer"),
])
def test_mistakes_are_400s_at_the_entrys_json_path(store, control, code, param):
    with pytest.raises(APIError) as e:
        resolve(store, control)
    assert e.value.status == 400 and e.value.param == param
    assert e.value.code is not None
    if code is not None:
        assert e.value.code == code


def test_other_controls_may_steer_through_the_shared_token_plan(store):
    """A control with no worker half of its own steers by returning entries."""
    class Twice(Control):
        name, schema = "twice", Steer.schema

        def resolve(self, request, ctx):
            stored = ctx.load_artifact("vector", request.root[0].vector, ctx.param)
            e = steer_entry(request.root[0].vector, stored.sha256, str(stored.path),
                            list(stored.value.layers), 1.0)
            return Resolution(None, {"n": 2}, steer=[e, e])

        def worker(self, ctx):
            return None

    resolver = ControlResolver(store, FP, 8.0, controls={"steer": Steer(),
                                                         "twice": Twice()})
    r = resolver.resolve({"steer": [{"vector": "b"}], "twice": [{"vector": "a"}]})
    assert [e.sha256 for e in r.wire.steer] == [store.get_vector(n).sha256
                                                for n in ("b", "a", "a")]
    assert r.runs == ["steer", "twice"]


def test_the_openapi_spec_lists_steer_as_a_bounded_array():
    control = json_body(ChatCompletionBody)["requestBody"]["content"][
        "application/json"]["schema"]["properties"]["control"]["anyOf"][0]
    steer = control["properties"]["steer"]
    assert steer["type"] == "array" and steer["maxItems"] == MAX_STEER_ENTRIES
    assert set(steer["items"]["properties"]) >= {"vector", "scale", "kl", "layers",
                                                 "positions", "op"}
