"""`vsteer eval probe` end to end (its own engine, a few held-out questions)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import PROBE

pytestmark = pytest.mark.engine


def test_eval_probe_reports_auroc_abstention_and_accuracy(model_dir, artifacts,
                                                          probe_artifacts, tmp_path):
    data = probe_artifacts["data"]
    out = tmp_path / "eval"
    proc = subprocess.run(
        [sys.executable, "-m", "vsteer.cli", "eval", "probe", "--model", str(model_dir),
         "--artifacts", str(artifacts), "--probe", PROBE, "--questions", str(data),
         "--limit", "12", "--out", str(out)],
        capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = json.loads((out / "report.json").read_text())
    assert report["questions"] == 12
    for key in ("auroc", "accuracy_at_threshold", "base_accuracy"):
        assert 0.0 <= report[key] <= 1.0, key
    a = report["abstain"]
    # abstain fires exactly where annotate's score crossed the threshold, and an
    # abstained question generated nothing but its end token
    assert a["matches_annotate_scores"] is True
    rows = [json.loads(line) for line in (out / "answers.jsonl").read_text().splitlines()]
    by_mode = {m: [r for r in rows if r["mode"] == m] for m in ("annotate", "abstain",
                                                                 "mitigate")}
    assert all(len(v) == 12 for v in by_mode.values())
    for r in by_mode["abstain"]:
        if r["fired"]:
            assert r["completion"] == "" and r["generated_tokens"] == 1
    answered = [r["correct"] for r in by_mode["abstain"] if not r["fired"]]
    assert a["answered"] == len(answered)
    # annotate never changes tokens: its answers equal the unfired abstain answers
    for base, ab in zip(by_mode["annotate"], by_mode["abstain"], strict=True):
        if not ab["fired"]:
            assert base["completion"] == ab["completion"]
    # held-out questions only: none of them was a training question
    train = {json.loads(line)["question"] for line in data.read_text().splitlines()
             if json.loads(line)["split"] == "train"}
    assert train and not {r["question"] for r in rows} & train
    assert (out / "roc.png").stat().st_size > 0
    assert (out / "accuracy_vs_coverage.png").stat().st_size > 0
