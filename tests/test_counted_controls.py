"""Which controls a request counts under in vsteer_controlled_requests_total{control}."""

from __future__ import annotations

from vsteer.server.control_resolver import ResolvedControl
from vsteer.wire import WireSpec, WireSteer

ENTRY = WireSteer(key="k", path="", sha256="", layers=[1], scale=1.0, op="add",
                  positions="all")


def test_controls_that_run_are_counted_by_their_key():
    r = ResolvedControl(WireSpec(rid="r", steer=[ENTRY], plugins={"early_exit": "{}"}),
                        {"steer": [{}], "refusal": {"mode": "force"},
                         "early_exit": {"mode": "observe"}},
                        runs=["steer", "refusal", "early_exit"])
    assert r.counted_controls == ["early_exit", "refusal", "steer"]


def test_scale_zero_steering_and_a_mode_off_are_not():
    """Every control alike: refusal `off` counts no more than early_exit `off`."""
    r = ResolvedControl(WireSpec(rid="r"), {"steer": [{"scale": 0.0}],
                                            "early_exit": {"mode": "off"},
                                            "refusal": {"mode": "off"}})
    assert r.counted_controls == []
