"""`vsteer eval probe --loso` end to end on the session's labelled geography answers,
each geography family standing in for a source; and `vsteer probe train` on several
sources selecting by source."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import vsteer_cli

pytestmark = pytest.mark.engine


@pytest.fixture(scope="module")
def by_family(probe_artifacts, tmp_path_factory):
    rows = [json.loads(line) for line in probe_artifacts["data"].read_text().splitlines()]
    path = tmp_path_factory.mktemp("loso") / "labelled.jsonl"
    path.write_text("".join(json.dumps({**r, "source": r["family"]}) + "\n" for r in rows))
    return path, rows


def test_loso_trains_without_each_source_and_reports_it(model_dir, by_family, tmp_path):
    path, rows = by_family
    out = tmp_path / "loso"
    vsteer_cli("eval", "probe", "--model", str(model_dir), "--loso", str(path),
               "--max-error", "0.3", "--max-error", "0.6", "--out", str(out), timeout=900)
    report = json.loads((out / "report.json").read_text())
    families = sorted({r["family"] for r in rows})
    assert sorted(report["sources"]) == families
    for g, r in report["sources"].items():
        mine = [x for x in rows if x["family"] == g]
        assert r["questions"] == len(mine)
        assert r["base_accuracy"] == pytest.approx(np.mean([x["correct"] for x in mine]))
        assert g not in r["trained_on"] and len(r["trained_on"]) == len(families) - 1
        assert r["selection"] == "by-source"  # >= 3 training sources
        if not np.isnan(r["auroc"]):
            lo, hi = r["auroc_ci"]
            assert lo <= r["auroc"] <= hi
        assert [x["max_error"] for x in r["risk"]] == [0.3, 0.6]
        for x in r["risk"]:
            if x["attainable"] and x["achieved_error"] is not None:
                assert 0 <= x["coverage"] <= 1
    for g, r in report["in_distribution"].items():  # held-out entities of each source
        assert r["questions"] == sum(x["family"] == g and x["split"] == "test" for x in rows)
    assert (out / "loso_auroc.png").stat().st_size > 0
    assert "max_error 0.3" in (out / "report.md").read_text()
