"""Dosing a vector by effect (vsteer/dose_curve.py, vsteer/dose.py): the curve's
inversion, the repetition measure, and `"kl"` through the real server."""

from __future__ import annotations

import json
import shutil

import pytest

from vsteer.dose import repetition_rate
from vsteer.dose_curve import DoseCurve, DoseOutOfRange

from chat_api import ask, body_for, post, text
from conftest import vsteer_cli
from prompts import NEUTRAL


def _curve(kl=(0.9, 0.2, 0.0, 0.1, 0.5, 0.4, 1.5)):
    return DoseCurve([-2.0, -1.0, 0.0, 1.0, 2.0, 3.0, 4.0], list(kl), [0.0] * 7, 8, [1, 2], 8)


def test_scale_for_interpolates_on_the_monotone_envelope_of_each_branch():
    c = _curve()
    assert c.scale_for(0.0) == 0.0
    assert c.scale_for(0.1) == pytest.approx(1.0)
    assert c.scale_for(0.3) == pytest.approx(1.5)  # between kl 0.1 at 1 and 0.5 at 2
    assert c.scale_for(0.5) == pytest.approx(2.0)  # 3.0 dips to 0.4: the envelope stays 0.5
    assert c.scale_for(1.0) == pytest.approx(3.0 + 0.5 / 1.0)  # env 0.5 at 3, 1.5 at 4
    assert c.scale_for(-0.2) == pytest.approx(-1.0)  # negative kl: the other direction
    assert c.scale_for(-0.55) == pytest.approx(-1.5)
    with pytest.raises(DoseOutOfRange, match="at most 1.5"):
        c.scale_for(2.0)
    with pytest.raises(DoseOutOfRange, match="at most 0.9"):
        c.scale_for(-1.0)


def test_curve_rejects_bad_grids_and_round_trips():
    with pytest.raises(ValueError):
        DoseCurve([1.0, 2.0], [0.0, 0.1], [0, 0], 1, [0], 8)  # no 0
    with pytest.raises(ValueError):
        DoseCurve([0.0, 0.0], [0.0, 0.1], [0, 0], 1, [0], 8)
    c = _curve()
    assert DoseCurve.from_dict(json.loads(json.dumps(c.to_dict()))) == c


def test_repetition_rate_counts_repeated_word_trigrams():
    assert repetition_rate("the cat sat on the mat") == 0.0
    assert repetition_rate("a b c a b c a b c") == pytest.approx(4 / 7)
    assert repetition_rate("too short") == 0.0


@pytest.fixture(scope="module")
def dosed(server, model_dir, artifacts, demo_vector):
    """`joyful-dosed`: the demo vector with a dose curve measured by the real CLI."""
    src = artifacts / "vector" / "joyful.safetensors"
    shutil.copy(src, artifacts / "vector" / "joyful-dosed.safetensors")
    out = vsteer_cli("vector", "calibrate", "joyful-dosed", "--model", str(model_dir),
                     "--artifacts", str(artifacts), "--limit", "4",
                     "--scales=-4,-1,0,1,2,4", "--gen-tokens", "8", timeout=600)
    return DoseCurve.from_dict({k: v for k, v in json.loads(out.strip().splitlines()[-1])
                                .items() if k in DoseCurve.__dataclass_fields__})


@pytest.mark.engine
def test_kl_picks_the_scale_from_the_curve_and_steers_like_that_scale(server, dosed):
    assert dosed.scales == [-4.0, -1.0, 0.0, 1.0, 2.0, 4.0]
    assert dosed.kl[2] == pytest.approx(0.0, abs=1e-6) and max(dosed.kl) > 0
    kl = dosed.max_kl(1.0) / 2
    want = dosed.scale_for(kl)
    assert 0 < want <= 4
    p = NEUTRAL[0]
    r = ask(server, p, {"steer": [{"vector": "joyful-dosed", "kl": kl}]})
    applied = r["control"]["steer"][0]
    assert applied["kl"] == kl and applied["scale"] == pytest.approx(want)
    same = ask(server, p, {"steer": [{"vector": "joyful-dosed", "scale": applied["scale"]}]})
    assert text(r) == text(same)
    assert text(r) != text(ask(server, p))


@pytest.mark.engine
@pytest.mark.parametrize(("entry", "code"), [
    ({"vector": "joyful-dosed", "kl": 0.1, "scale": 1.0}, "conflicting_fields"),
    ({"vector": "joyful-dosed", "kl": 0.1, "op": "ablate"}, "field_not_applicable"),
    ({"vector": "joyful-dosed", "kl": 0.1, "layers": [6]}, "field_not_applicable"),
    ({"vector": "joyful", "kl": 0.1}, "vector_not_calibrated"),
    ({"vector": "joyful-dosed", "kl": 1e6}, "kl_out_of_range"),
])
def test_bad_kl_requests_are_coded_400s_before_the_engine(server, dosed, entry, code):
    before = server.metric("vsteer_controlled_requests_total")
    r = post(server, body_for(NEUTRAL[0], {"steer": [entry]}))
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["code"] == code and err["param"] == "control.steer[0].kl"
    assert server.metric("vsteer_controlled_requests_total") == before
