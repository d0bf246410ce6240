"""Refusal artifacts, the controller's math, the policy file and the refusal judge
(no engine)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vsteer.artifacts import (
    ArtifactError,
    ArtifactStore,
    GuardCalibration,
    ModelFingerprint,
    RefusalController,
    RefusalDirection,
)
from vsteer.plugins.decision import Decision, decide
from vsteer.plugins.shared_tables import write_force
from vsteer.refusal.judge import is_refusal
from vsteer.server.policy import Policy, PolicyFile
from vsteer.wire import WireDecide

FP = ModelFingerprint("LlamaForCausalLM", 8, 4)


def _direction(cal=None) -> RefusalDirection:
    rng = np.random.default_rng(0)
    vecs = lambda: {la: rng.normal(size=8).astype(np.float32) for la in range(4)}  # noqa: E731
    return RefusalDirection(vecs(), vecs(), 2, FP, {"x": 1}, cal)


def _controller() -> RefusalController:
    rng = np.random.default_rng(1)
    f = lambda *s: rng.normal(size=s).astype(np.float32)  # noqa: E731
    return RefusalController(f(8, 3), f(3), f(3, 5), f(5), f(8), np.abs(f(8)) + 0.5, 1, 1.5,
                             0.5, "refusal", "ab" * 32, FP)


def test_direction_round_trips_through_the_store(tmp_path):
    store = ArtifactStore(tmp_path)
    d = _direction(GuardCalibration(1, 0.25, 0.9, {"per_layer": {}}))
    store.save("direction", "refusal", d)
    got = store.get("direction", "refusal").value
    assert got.layer == 2 and got.calibration == d.calibration
    for la in range(4):
        np.testing.assert_array_equal(got.refusal[la], d.refusal[la])
        np.testing.assert_array_equal(got.condition[la], d.condition[la])


def test_direction_rejects_a_condition_layer_after_the_force_layer():
    with pytest.raises(ArtifactError, match="condition layer"):
        _direction(GuardCalibration(3, 0.1, 0.5))


def test_a_vector_file_is_not_a_direction(tmp_path):
    from vsteer.artifacts import SteeringVector

    data = SteeringVector({0: np.ones(8, np.float32)}, FP).to_safetensors_bytes()
    with pytest.raises(ArtifactError, match="kind"):
        RefusalDirection.from_safetensors_bytes(data)
    with pytest.raises(ArtifactError):
        RefusalController.from_safetensors_bytes(data[:40])


def test_controller_round_trips_and_runtime_math_matches_the_numpy_twin(tmp_path):
    c = _controller()
    c2 = RefusalController.from_safetensors_bytes(c.to_safetensors_bytes())
    x = np.random.default_rng(2).normal(size=8).astype(np.float32)
    p, w = c2.evaluate(x)
    wire = WireDecide(kind="controller", layer=1, direction_path="", direction_sha256="",
                      force_layers=[2, 3], source_key="s", threshold=-1.0)
    d = Decision(wire, 1, 2, controller={k: torch.from_numpy(getattr(c2, k)) for k in
                                         ("w1", "b1", "w2", "b2", "mu", "sigma")}, w_max=1.5)
    coeff = decide(d, torch.from_numpy(x))
    assert d.fired and d.score == pytest.approx(p, rel=1e-5)
    assert coeff == pytest.approx({2: float(w[2]), 3: float(w[3])}, rel=1e-5)


def test_a_fired_force_is_written_into_the_private_slot_at_its_layers_only():
    """write_force (a fired controller or MLP probe); guards write theirs in the job
    table op (tests/test_job_table.py)."""
    vectors = torch.zeros(3, 4, 8)
    vectors[1] = torch.arange(32, dtype=torch.float32).view(4, 8)
    inv = torch.zeros(3, 4)
    inv[1] = 1.0 / vectors[1].norm(dim=1)
    write_force(1, 2, {2: 2.0, 3: 0.0}, vectors, inv)
    torch.testing.assert_close(vectors[2, 2], 2.0 * vectors[1, 2])
    assert float(vectors[2, [0, 1, 3]].abs().sum()) == 0.0  # only the non-zero force layer
    assert float(inv[2, 2]) == pytest.approx(float(inv[1, 2]) / 2)


POLICY = """
tenants:
  acme:
    keys: [k1, k2]
    artifacts: ["joy*"]
    max_abs_scale: 2
    default_control: {refusal: {mode: guard, direction: refusal}}
    locked: [refusal]
  other:
    keys: [k3]
"""


def test_policy_maps_keys_to_tenants_and_rejects_bad_files(tmp_path):
    pol = Policy.parse(POLICY)
    assert pol.tenant_for("k2").name == "acme" and pol.tenant_for("k3").name == "other"
    assert pol.tenant_for("k") is None and pol.tenant_for("k1 ") is None
    acme = pol.tenant_for("k1").policy
    assert acme.may_use("joyful") and not acme.may_use("refusal")
    assert pol.tenant_for("k3").policy.may_use("anything")
    with pytest.raises(ValueError, match="no default_control"):
        Policy.parse("tenants: {a: {keys: [x], locked: [refusal]}}")
    with pytest.raises(ValueError, match="listed twice"):
        Policy.parse("tenants: {a: {keys: [x]}, b: {keys: [x]}}")
    with pytest.raises(ValueError):
        Policy.parse("tenants: {a: {keys: [x], max_abs_scale: -1}}")


def test_policy_file_reloads_on_change_and_keeps_the_old_one_on_a_bad_edit(tmp_path,
                                                                           monkeypatch):
    import os

    import vsteer.server.policy as policy_mod

    monkeypatch.setattr(policy_mod, "RELOAD_CHECK_S", 0.0)
    path = tmp_path / "p.yaml"
    path.write_text(POLICY)
    pf = PolicyFile(path)
    assert pf.current().tenant_for("k9") is None
    path.write_text(POLICY + "  new:\n    keys: [k9]\n")
    os.utime(path, ns=(1, 10**18))
    assert pf.current().tenant_for("k9").name == "new"
    path.write_text("tenants: [not, a, mapping]\n")
    os.utime(path, ns=(1, 2 * 10**18))
    assert pf.current().tenant_for("k9").name == "new"  # previous policy kept
    assert pf.reload_errors == 1


def test_refusal_judge():
    assert is_refusal("I'm sorry, but I can't help with that.")
    assert is_refusal("As an AI, I do not have opinions.")
    assert is_refusal("I\u2019m unable to assist.")
    assert not is_refusal("Sure! Here is a recipe for banana bread.")
    assert not is_refusal("x" * 130 + "I cannot")  # only the opening counts
