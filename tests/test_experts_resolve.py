"""`control.experts` resolved before the engine (plugins/experts_control.py): what the
worker described of the model's MoE layers bounds every rule; each mistake is a 400
with its code and JSON path, in both the list and the object form; expert sets load
from the store; the report sums the worker's per-step counts."""

from __future__ import annotations

import json

import pytest

from vsteer.artifacts import ArtifactError, ArtifactStore, ModelFingerprint
from vsteer.artifacts.expert_set import ExpertSet
from vsteer.plugins.experts_control import Experts
from vsteer.server.control_resolver import ControlResolver
from vsteer.server.errors import APIError

FP = ModelFingerprint("MixtralForCausalLM", 64, 4)
MOE = {"layers": [0, 1, 2, 3], "num_experts": 8, "top_k": 2, "renormalize": True}


@pytest.fixture
def store(tmp_path):
    return ArtifactStore(tmp_path)


def resolver(store, info=MOE) -> ControlResolver:
    return ControlResolver(store, FP, 8.0, controls={"experts": Experts()},
                           worker_info={"experts": info})


def wire(store, experts, info=MOE) -> dict:
    return json.loads(resolver(store, info).resolve({"experts": experts}).wire.plugins["experts"])


def test_rules_become_one_route_table(store):
    w = wire(store, [{"layers": [1], "experts": [5, 3], "op": "off"},
                     {"experts": [7], "op": "force", "weight": 0.25}])
    assert w["route"] == [[0, 7, 0.25], [1, 3, -1.0], [1, 5, -1.0], [1, 7, 0.25],
                          [2, 7, 0.25], [3, 7, 0.25]]
    assert w["rules"] == [[[1, 3], [1, 5]], [[0, 7], [1, 7], [2, 7], [3, 7]]]
    assert w["routing"] is False
    r = resolver(store).resolve({"experts": {"rules": [], "routing": True}})
    assert r.applied["experts"] == {"rules": [], "routing": True}
    assert r.private_prefill  # the prompt is computed for this request alone


@pytest.mark.parametrize("experts,code,param", [
    ([{"experts": [8]}], "expert_out_of_range", "control.experts[0].experts"),
    ([{"layers": [4], "experts": [1]}], "layer_not_moe", "control.experts[0].layers"),
    ([{"experts": [1], "op": "force"}], "missing_field", "control.experts[0].weight"),
    ([{"experts": [1], "weight": 0.5}], "field_not_applicable", "control.experts[0].weight"),
    ([{"experts": [1], "op": "force", "weight": 1.5}], "invalid_value",
     "control.experts[0].weight"),
    ([{"op": "off"}], "missing_field", "control.experts[0].experts"),
    ([{"experts": [1], "turn": "off"}], "unknown_field", "control.experts[0].turn"),
    ([{"experts": [1]}, {"experts": [1], "op": "force", "weight": 0.5}],
     "conflicting_fields", "control.experts[1]"),
    ([{"layers": [0], "experts": list(range(7))}], "too_many_experts", "control.experts"),
    ([{"layers": [0], "experts": [1, 2, 3], "op": "force", "weight": 0.1}],
     "too_many_experts", "control.experts"),
    ([{"set": "s", "experts": [1]}], "conflicting_fields", "control.experts[0].set"),
    ([{"set": "missing"}], "unknown_experts", "control.experts[0].set"),
    ({"rules": [{"experts": [9]}]}, "expert_out_of_range",
     "control.experts.rules[0].experts"),
    ({"rules": [{"experts": []}]}, "invalid_value", "control.experts.rules[0].experts"),
    ({"rule": []}, "unknown_field", "control.experts.rule"),
])
def test_mistakes_are_coded_400s(store, experts, code, param):
    with pytest.raises(APIError) as e:
        resolver(store).resolve({"experts": experts})
    assert (e.value.status, e.value.code, e.value.param) == (400, code, param)


def test_a_dense_model_refuses_expert_control(store):
    with pytest.raises(APIError) as e:
        resolver(store, {"layers": [], "why_not": ""}).resolve(
            {"experts": [{"experts": [0]}]})
    assert e.value.code == "not_supported" and "no mixture-of-experts" in str(e.value)
    with pytest.raises(APIError) as e:
        resolver(store, {"layers": [], "why_not": "its router picks in groups"}).resolve(
            {"experts": []})
    assert "groups" in str(e.value)


def test_an_expert_set_is_named_by_its_rule(store):
    s = ExpertSet([(2, 5), (1, 0)], [0.5, 0.125], 8, FP, {"positive": "a.txt"})  # fp32-exact
    store.save("experts", "refusal", s)
    assert ExpertSet.from_safetensors_bytes(s.to_safetensors_bytes()) == s
    r = resolver(store).resolve({"experts": [{"set": "refusal"}]})
    assert r.applied["experts"]["rules"] == [{"set": "refusal", "layers": [1, 2], "op": "off"}]
    assert json.loads(r.wire.plugins["experts"])["route"] == [[1, 0, -1.0], [2, 5, -1.0]]
    store.save("experts", "other", ExpertSet([(0, 1)], [0.2], 8,
                                             ModelFingerprint("MixtralForCausalLM", 64, 6)))
    with pytest.raises(APIError) as e:
        resolver(store).resolve({"experts": [{"set": "other"}]})
    assert e.value.code == "wrong_model"


@pytest.mark.parametrize("pairs,scores,why", [
    ([], [], "at least one"), ([(0, 1)], [], "one score"), ([(0, 1), (0, 1)], [1, 2], "twice"),
    ([(4, 1)], [1.0], "layer 4"), ([(0, 8)], [1.0], "expert 8")])
def test_an_expert_set_checks_itself(pairs, scores, why):
    with pytest.raises(ArtifactError, match=why):
        ExpertSet(pairs, scores, 8, FP)


def test_the_report_sums_the_steps():
    applied = {"rules": [{"layers": [1], "experts": [3], "op": "off"}], "routing": True}
    steps = [{"tokens": 4, "rules": [0], "routing": [[1, 2, 3], [0, 5, 4]]},
             {"tokens": 1, "rules": [0], "routing": [[1, 2, 1], [1, 10, 1]]}]
    rep = Experts().report(applied, steps)
    assert rep == {"rules": [{"layers": [1], "experts": [3], "op": "off", "routed": 0}],
                   "tokens": 5, "routing": {"0": {"5": 4}, "1": {"2": 4, "10": 1}}}
