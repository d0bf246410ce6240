"""`vsteer exit train`: the model-written corpus (session fixture) and a corpus file."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import EXIT, printed_json

pytestmark = pytest.mark.engine


def test_train_without_corpus_writes_artifact_report_and_plots(exit_artifacts, store,
                                                               fingerprint):
    pred = store.get("exit", EXIT).value
    assert pred.fingerprint == fingerprint
    report_dir = exit_artifacts["report_dir"]
    report = json.loads((report_dir / "report.json").read_text())
    for png in ("agreement_by_layer.png", "calibration.png", "cascade.png"):
        assert (report_dir / png).stat().st_size > 0
    corpus = [json.loads(line) for line in (report_dir / "corpus.jsonl").read_text().splitlines()]
    assert len(corpus) == 24 and all(r["completion_token_ids"] for r in corpus)
    assert report["tokens"]["fit"] + report["tokens"]["calibration"] + \
        report["tokens"]["test"] == sum(len(r["completion_token_ids"]) for r in corpus)
    lens = [r["lens_agreement"] for r in report["layers"]]
    assert lens[-1] > lens[0]  # the logit lens agrees more the deeper it reads
    # the artifact checks exactly the layers the report says were worth checking
    for c in report["cascade"]:
        live = [la for la, t in zip(pred.layers, pred.thresholds_for(c["target"]),
                                    strict=True) if t <= 1.0]
        assert live == c["checked_layers"]
        assert 0.0 <= c["exit_fraction"] <= 1.0 and c["net_layers_saved"] >= 0.0


def test_train_from_a_corpus_file(model_dir, tmp_path):
    corpus = tmp_path / "corpus.jsonl"
    rows = [{"text": "The quick brown fox jumps over the lazy dog. " * 6},
            {"prompt": "Name a colour.", "completion": "Blue is a calm colour of the sky."}]
    corpus.write_text("".join(json.dumps(r) + "\n" for r in rows * 12))
    out = subprocess.run([sys.executable, "-m", "vsteer.cli", "exit", "train", "--model",
                          str(model_dir), "--corpus", str(corpus), "--name", "from-file",
                          "--artifacts", str(tmp_path / "art"), "--layers", "20-28"],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    summary = printed_json(out.stdout)
    assert sum(summary["tokens"].values()) > 0
    from vsteer.artifacts import ArtifactStore

    assert ArtifactStore(tmp_path / "art").get("exit", "from-file").value.layers == \
        list(range(20, 29))
