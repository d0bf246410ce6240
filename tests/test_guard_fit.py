"""The guard's FPR-target calibration (vsteer/refusal/guard_fit.py) on synthetic states,
and the shipped refusal sources (vsteer/refusal/sources.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from vsteer.refusal.guard_fit import (
    LabelledStates,
    PromptStates,
    cosine,
    fit_guard,
    fpr_threshold,
    label_sources,
    threshold_for,
)
from vsteer.refusal.sources import PromptSource, labelled_file, shipped_sources


@pytest.mark.parametrize("fpr", [0.0, 0.05, 0.1, 0.25, 0.5])
def test_fpr_threshold_flags_at_most_the_target_and_is_the_smallest_such(fpr):
    rng = np.random.default_rng(1)
    benign = np.round(rng.normal(size=83), 2)  # ties on purpose
    t = fpr_threshold(benign, fpr)
    assert (benign >= t).mean() <= fpr + 1e-12
    lower = benign[benign < t]
    if len(lower):  # the next lower score value would flag too many
        assert (benign >= lower.max()).mean() > fpr


def test_worst_source_keeps_the_target_on_every_source_pooled_only_on_the_mix():
    rng = np.random.default_rng(2)
    scores = np.concatenate([rng.normal(0.0, 1, 400), rng.normal(1.5, 1, 40)])
    src = np.array(["big"] * 400 + ["shifted"] * 40)
    worst = threshold_for(scores, src, 0.05, "worst-source")
    pooled = threshold_for(scores, src, 0.05, "pooled")
    for s in ("big", "shifted"):
        assert (scores[src == s] >= worst).mean() <= 0.05
    assert (scores[src == "shifted"] >= pooled).mean() > 0.05  # the mix hides it
    assert (scores >= pooled).mean() <= 0.05
    assert worst > pooled


def _synthetic(n_layers: int = 6, h: int = 16, informative: int = 3, seed: int = 0
               ) -> tuple[LabelledStates, np.ndarray]:
    """Two sources; harmful prompts lean along `u` at layer `informative` only."""
    rng = np.random.default_rng(seed)
    u = rng.normal(size=h)
    u /= np.linalg.norm(u)
    sources = [PromptSource(f"s{k}", [f"h{k}-{i}" for i in range(40)],
                            [f"b{k}-{i}" for i in range(40)]) for k in range(2)]
    prompts, harmful, src, held = label_sources(sources)
    n = len(prompts)
    last = rng.normal(size=(n, n_layers, h)) + 4.0 * rng.normal(size=(1, 1, h))
    last[harmful, informative] += 3.0 * u
    return LabelledStates(PromptStates(last.copy(), last), harmful, src, held), u


def test_fit_guard_picks_the_informative_layer_and_holds_the_fpr_on_held_rows():
    data, u = _synthetic()
    condition, cal = fit_guard(data, force_layer=5, max_fpr=0.05, rule="worst-source",
                               calibrated_on=[{"source": "s0"}])
    assert cal.condition_layer == 3
    s = cosine(data.states.last[:, 3], condition[3])
    neg = data.held & ~data.harmful
    for name in ("s0", "s1"):
        assert (s[neg & (data.source == name)] >= cal.threshold).mean() <= 0.05
    assert cal.scores["per_layer"]["3"]["tpr"] > 0.8
    assert cal.scores["calibrated_on"] == [{"source": "s0"}]
    assert cal.scores["fpr_rule"] == "worst-source"
    assert float(np.dot(condition[3], u) / np.linalg.norm(condition[3])) > 0.9


def test_fit_guard_never_reads_the_held_rows_for_the_vectors():
    data, _ = _synthetic()
    before, _ = fit_guard(data, 5, 0.05, "pooled", [])
    data.states.cond[data.held] += 100.0  # held rows only: vectors must not move
    after, _ = fit_guard(data, 5, 0.05, "pooled", [])
    np.testing.assert_array_equal(before, after)


def test_label_sources_holds_out_every_fourth_prompt_of_each_half():
    s = PromptSource("x", [f"h{i}" for i in range(8)], [f"b{i}" for i in range(4)])
    prompts, harmful, src, held = label_sources([s])
    assert [p for p, h in zip(prompts, held, strict=True) if h] == ["h3", "h7", "b3"]
    assert harmful.sum() == 8 and set(src) == {"x"}


def test_shipped_sources_are_disjoint_sets_of_prompts():
    sources = shipped_sources()
    assert {"harmbench", "advbench", "donotanswer", "tense", "pairs", "homonym"} <= set(sources)
    seen: dict[str, str] = {}
    for name, s in sources.items():
        assert len(set(s.harmful)) == len(s.harmful) and len(set(s.harmless)) == len(s.harmless)
        for p in s.harmful + s.harmless:
            assert seen.setdefault(p, name) == name, f"{p!r} in {seen[p]} and {name}"
    assert len(sources["pairs"].harmful) == len(sources["pairs"].harmless)  # matched pairs
    assert not sources["homonym"].harmful  # benign-only: reports harmless refusal alone


def test_labelled_file_reads_operator_traffic_and_rejects_bad_lines(tmp_path):
    good = tmp_path / "traffic.jsonl"
    rows = [{"prompt": f"p{i}", "label": "harmful" if i % 2 else "harmless"} for i in range(10)]
    good.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    s = labelled_file(good)
    assert s.name == "traffic" and len(s.harmful) == 5 and len(s.harmless) == 5
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"prompt": "x", "label": "maybe"}) + "\n")
    with pytest.raises(SystemExit, match="label must be"):
        labelled_file(bad)
    few = tmp_path / "few.jsonl"
    few.write_text("\n".join(json.dumps(r) for r in rows[:4]) + "\n")
    with pytest.raises(SystemExit, match="at least 4"):
        labelled_file(few)


def test_linear_guard_separates_content_when_style_shifts_the_cosine():
    """Two sources; one source's style moves all its prompts, harmless ones included,
    as far along the harmful direction as harm does (plus a style cue of its own):
    one threshold on the classifier's score still holds the FPR on both."""
    from vsteer.refusal.guard_fit import fit_linear_guard

    rng = np.random.default_rng(3)
    h, n_layers = 24, 4
    q, _ = np.linalg.qr(rng.normal(size=(h, 3)))
    content, style = q[:, 0], q[:, 1]
    sources = [PromptSource(f"s{k}", [f"h{k}-{i}" for i in range(60)],
                            [f"b{k}-{i}" for i in range(60)]) for k in range(2)]
    prompts, harmful, src, held = label_sources(sources)
    cond = rng.normal(size=(len(prompts), n_layers, h))
    cond[:, 2] += 5.0 * harmful[:, None] * content
    cond[:, 2] += np.where(src == "s1", 5.0, 0.0)[:, None] * (content + 2 * style)
    data = LabelledStates(PromptStates(cond, cond.copy()), harmful, src, held)
    _, weight, cal = fit_linear_guard(data, 3, 0.05, "worst-source", [], window=5)
    assert cal.kind == "linear" and cal.window == 5 and cal.condition_layer == 2
    from vsteer.probe.train import linear_scores

    s = linear_scores(cond[:, 2], weight, cal.bias)
    for name in ("s0", "s1"):
        mine = src == name
        assert (s[mine & ~harmful] >= cal.threshold).mean() <= 0.1
        assert (s[mine & harmful] >= cal.threshold).mean() >= 0.6


@pytest.mark.parametrize(("p", "n", "end", "window", "want"), [
    (0, 20, 20, 5, (15, 20, True, True)),  # whole prompt in one chunk
    (0, 17, 20, 5, (15, 17, True, False)),  # the window's start in this chunk
    (17, 3, 20, 5, (17, 20, False, True)),  # its end in the next
    (0, 10, 20, 5, None),  # a chunk before the window
    (0, 3, 3, 5, (0, 3, True, True)),  # a prompt shorter than the window
    (0, 20, 20, 1, (19, 20, True, True)),  # cosine: the last prompt token
])
def test_window_part_splits_the_guard_window_across_prefill_chunks(p, n, end, window, want):
    from vsteer.plugins.decision import window_part

    assert window_part(p, n, end, window) == want


def test_linear_guard_round_trips_and_is_validated(tmp_path):
    from dataclasses import replace

    from test_refusal_artifacts import _direction

    from vsteer.artifacts import ArtifactError, GuardCalibration, RefusalDirection

    d = _direction()
    h = d.fingerprint.hidden_size
    cal = GuardCalibration(1, 0.7, 0.9, {"max_fpr": 0.05}, kind="linear", bias=-0.3, window=5)
    lin = replace(d, calibration=cal, guard_weight=np.arange(h, dtype=np.float32))
    back = RefusalDirection.from_safetensors_bytes(lin.to_safetensors_bytes())
    assert back.calibration == cal
    np.testing.assert_array_equal(back.guard_weight, lin.guard_weight)
    with pytest.raises(ArtifactError, match="finite"):
        replace(d, calibration=cal)  # linear without a weight
    with pytest.raises(ArtifactError, match="needs a linear"):
        replace(d, guard_weight=np.ones(h, np.float32))  # a weight without a linear guard


def test_calibration_sources_leave_the_harmbench_test_split_held_out():
    from vsteer.refusal.data import default_set, load_prompts

    cal = shipped_sources(with_test_split=False)["harmbench"]
    test = set(load_prompts(default_set("harmful", "test"))) | set(
        load_prompts(default_set("harmless", "test")))
    assert test and not test & set(cal.harmful + cal.harmless)
    assert test <= set(shipped_sources()["harmbench"].harmful
                       + shipped_sources()["harmbench"].harmless)
