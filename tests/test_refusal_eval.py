"""`vsteer eval refusal` end to end (its own engine, a few prompts per set)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.engine


def test_eval_refusal_writes_report_table_and_chart(model_dir, artifacts, refusal_artifacts,
                                                    tmp_path):
    out = tmp_path / "eval"
    proc = subprocess.run(
        [sys.executable, "-m", "vsteer.cli", "eval", "refusal", "--model", str(model_dir),
         "--artifacts", str(artifacts), "--direction", "refusal", "--controller",
         "refusal-ctrl", "--limit", "4", "--out", str(out)],
        capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = json.loads((out / "report.json").read_text())
    assert list(report["modes"]) == ["base", "force", "guard", "controller", "ablate"]
    assert report["sizes"] == {"harmful": 4, "harmless": 4}
    for mode, m in report["modes"].items():
        for key in ("harmful_refusal_rate", "harmless_refusal_rate"):
            assert 0.0 <= m[key] <= 1.0, (mode, m)
    assert "harmful_triggered_rate" in report["modes"]["guard"]
    rows = [json.loads(line) for line in (out / "completions.jsonl").read_text().splitlines()]
    assert len(rows) == 5 * 8
    # the rates are the judge applied to the completions that were written
    from vsteer.refusal.judge import is_refusal

    base_harmful = [r for r in rows if r["mode"] == "base" and r["set"] == "harmful"]
    assert report["modes"]["base"]["harmful_refusal_rate"] == sum(
        is_refusal(r["completion"]) for r in base_harmful) / 4
    # force (unconditional) makes the model refuse more than base does
    assert report["modes"]["force"]["harmless_refusal_rate"] > report["modes"]["base"][
        "harmless_refusal_rate"]
    assert (out / "report.md").read_text().startswith("| mode |")
    assert (out / "refusal_rates.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
