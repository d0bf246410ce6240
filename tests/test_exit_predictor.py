"""Exit predictors without an engine: the artifact, threshold calibration, the runtime's
torch scoring against the artifact's numpy twin, and the response statistics."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from vsteer.artifacts import ArtifactError, ExitPredictor, ModelFingerprint
from vsteer.artifacts.exit_predictor import UNREACHABLE, confidence_logit
from vsteer.early_exit.bench import token_agreement
from vsteer.early_exit.summary import summarize_exits
from vsteer.early_exit.train import calibrate, cascade
from vsteer.plugins.early_exit import exit_logits

FP = ModelFingerprint("LlamaForCausalLM", 8, 6)
TARGETS = [0.9, 0.98]


def predictor(**kw) -> ExitPredictor:
    rng = np.random.default_rng(0)
    args = dict(layers=[2, 4], weight=rng.normal(size=(2, 9)).astype(np.float32),
                bias=np.array([0.1, -0.2], np.float32), targets=TARGETS,
                thresholds=np.array([[0.7, 0.9], [0.6, UNREACHABLE]], np.float32),
                default_target=0.98, fingerprint=FP)
    return ExitPredictor(**{**args, **kw})


def test_round_trip():
    p = predictor()
    q = ExitPredictor.from_safetensors_bytes(p.to_safetensors_bytes())
    assert q.layers == p.layers and q.targets == p.targets
    np.testing.assert_array_equal(q.weight, p.weight)
    np.testing.assert_array_equal(q.thresholds, p.thresholds)


@pytest.mark.parametrize("bad, why", [
    ({"layers": [0, 4]}, "1..4"),
    ({"layers": [4, 2]}, "ascending"),
    ({"layers": [2, 5]}, "1..4"),
    ({"weight": np.zeros((2, 8), np.float32)}, "shapes"),
    ({"thresholds": np.zeros((2, 3), np.float32)}, "thresholds"),
    ({"default_target": 0.95}, "not calibrated"),
    ({"bias": np.array([np.nan, 0], np.float32)}, "not finite"),
])
def test_invalid_predictors_are_refused(bad, why):
    with pytest.raises(ArtifactError, match=why):
        predictor(**bad)


def test_thresholds_for_never_picks_a_looser_target():
    p = predictor()
    assert p.thresholds_for(0.9) == pytest.approx([0.7, 0.6])
    assert p.thresholds_for(0.95) == pytest.approx([0.9, UNREACHABLE])
    with pytest.raises(ArtifactError, match="above the highest"):
        p.thresholds_for(0.99)


def test_confidence_logit_edges():
    assert confidence_logit(0.0) == -math.inf
    assert confidence_logit(1.0) == math.inf
    assert confidence_logit(0.5) == 0.0


def test_runtime_scoring_matches_the_artifact_twin():
    p = predictor()
    rng = np.random.default_rng(1)
    x, prev = rng.normal(size=(5, 8)), rng.normal(size=(5, 8))
    for k in range(2):
        z = exit_logits(torch.tensor(x, dtype=torch.float32),
                        torch.tensor(prev, dtype=torch.float32),
                        torch.from_numpy(p.weight[k]), torch.tensor(p.bias[k]))
        np.testing.assert_allclose(torch.sigmoid(z).numpy(), p.confidence(x, prev, k),
                                   rtol=1e-5, atol=1e-6)


def test_calibrate_takes_the_lowest_threshold_that_meets_the_target():
    rng = np.random.default_rng(2)
    conf = rng.uniform(size=2000)
    agree = rng.uniform(size=2000) < conf  # agreement rises with confidence
    for target in (0.8, 0.9, 0.95):
        thr = calibrate(conf, agree, target)
        assert agree[conf >= thr].mean() >= target
        lower = conf[conf < thr].max()  # one more token accepted breaks the target
        assert agree[conf >= lower].mean() < target
    assert calibrate(conf, np.zeros(2000, bool), 0.5) == UNREACHABLE


def test_calibrate_keeps_ties_together():
    conf = np.array([0.9, 0.9, 0.9, 0.5])
    agree = np.array([True, True, False, True])
    assert calibrate(conf, agree, 0.9, min_support=1) == UNREACHABLE
    assert calibrate(conf, agree, 0.6, min_support=1) == 0.5


def test_cascade_exits_at_the_first_confident_layer():
    conf = np.array([[0.9, 0.1], [0.1, 0.9], [0.1, 0.1]])
    agree = np.array([[False, True], [True, True], [False, False]])
    out = cascade(conf, agree, np.array([0.5, 0.5]), layers=[2, 4], num_layers=6)
    assert out["exit_fraction"] == pytest.approx(2 / 3)
    assert out["agreement"] == pytest.approx(2 / 3)  # row 0 exits wrongly at layer 2
    assert out["saved_fraction"] == pytest.approx(((5 - 2) + (5 - 4) + 0) / (6 * 3))


def test_summarize_exits():
    s = summarize_exits([[29, -1], [12, 1], [12, 0], [20, 1]], num_layers=30)
    assert s["tokens"] == 4 and s["exited_tokens"] == 3
    assert s["histogram"] == {"12": 2, "20": 1, "29": 1}
    assert s["saved_fraction"] == pytest.approx((0 + 17 + 17 + 9) / 120)
    assert s["agreement"] == pytest.approx(2 / 3)
    assert summarize_exits([[29, -1]], 30)["agreement"] is None


def test_token_agreement():
    pos, prefix = token_agreement([[1, 2, 3, 4], [5, 6]], [[1, 2, 9, 4], [5, 6, 7]])
    assert pos == pytest.approx((3 / 4 + 1) / 2)
    assert prefix == pytest.approx((2 / 4 + 1) / 2)


def test_exit_mode_needs_an_engine_that_can_skip_layers(tmp_path):
    from vsteer.artifacts import ArtifactStore
    from vsteer.server.control_resolver import ControlResolver
    from vsteer.server.errors import APIError

    store = ArtifactStore(tmp_path)
    store.save("exit", "p", predictor())
    compiled = ControlResolver(store, FP, 8.0, worker_info={"early_exit": {"layer_skip": False}})
    with pytest.raises(APIError) as e:
        compiled.resolve({"early_exit": {"mode": "exit", "predictor": "p"}})
    assert e.value.status == 400 and "--enforce-eager" in e.value.message
    seen = compiled.resolve({"early_exit": {"mode": "observe", "predictor": "p"}})
    assert _wire(seen)["thresholds"] == pytest.approx([0.9, UNREACHABLE])
    eager = ControlResolver(store, FP, 8.0, worker_info={"early_exit": {"layer_skip": True}})
    r = eager.resolve({"early_exit": {"mode": "exit", "predictor": "p", "threshold": 0.3}})
    assert _wire(r)["thresholds"] == [0.3, 0.3]
    assert r.cache_salt() != eager.resolve(
        {"early_exit": {"mode": "exit", "predictor": "p", "threshold": 0.3}}).cache_salt()
    off = eager.resolve({"early_exit": {"mode": "off"}})
    assert "early_exit" not in off.wire.plugins and off.applied == {"early_exit": {"mode": "off"}}
    assert not off.active


def _wire(resolved) -> dict:
    return json.loads(resolved.wire.plugins["early_exit"])


def test_only_checks_that_pay_for_themselves_are_kept():
    from vsteer.early_exit.train import net_saving, select_checks

    n = 1000
    conf = np.zeros((n, 3))  # layer 2: never confident
    conf[: n // 2, 1] = 1.0  # layer 10: half the tokens
    conf[n // 2: n // 2 + n // 20, 2] = 1.0  # layer 28: 10% of the rest, one layer each
    thr = np.array([0.5, 0.5, 0.5])
    kept = select_checks(conf, thr, [2, 10, 28], num_layers=30)
    assert kept.tolist() == [UNREACHABLE, 0.5, UNREACHABLE]
    assert net_saving(conf, kept, [2, 10, 28], 30) > net_saving(conf, thr, [2, 10, 28], 30)
    assert net_saving(conf, np.full(3, UNREACHABLE), [2, 10, 28], 30) == 0.0
