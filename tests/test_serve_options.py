"""`vsteer serve` options that are vsteer's own: keys from the environment, rate limits."""

from __future__ import annotations

import pytest

from vsteer.server.main import build_config, parse


def test_keys_from_the_environment(monkeypatch, model_dir):
    monkeypatch.setenv("VSTEER_API_KEYS", "k1, k2,,")
    monkeypatch.setenv("VSTEER_ADMIN_KEY", "env-admin")
    cfg = build_config(["--model", str(model_dir), "--api-key", "cli-key"])
    assert cfg.api_keys == ["cli-key", "k1", "k2"] and cfg.admin_key == "env-admin"
    cfg = build_config(["--model", str(model_dir), "--admin-key", "cli-admin"])
    assert cfg.admin_key == "cli-admin"  # the command line wins
    monkeypatch.delenv("VSTEER_API_KEYS")
    monkeypatch.delenv("VSTEER_ADMIN_KEY")
    cfg = build_config(["--model", str(model_dir)])
    assert cfg.api_keys == [] and cfg.admin_key is None  # open server


def test_rate_limit_and_drain_options(capsys):
    ours, rest = parse(["--rate-limit", "2:10", "--drain-timeout", "5", "--dtype", "float32"])
    assert ours.rate_limit.rps == 2 and ours.rate_limit.capacity == 10
    assert ours.drain_timeout == 5 and rest == ["--dtype", "float32"]
    with pytest.raises(SystemExit):
        parse(["--rate-limit", "fast"])
    assert "invalid rate limit 'fast'" in capsys.readouterr().err
