"""Hidden states through the runtime match transformers; extraction CLI end to end."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from vsteer.extract import directions_from, load_pairs, parse_layers


def test_parse_layers():
    assert parse_layers("8-10", 30) == [8, 9, 10]
    assert parse_layers("3,5,7-8", 30) == [3, 5, 7, 8]
    assert parse_layers("all", 4) == [0, 1, 2, 3]
    with pytest.raises(ValueError):
        parse_layers("28-30", 30)


def test_diffmean_and_pca_recover_a_planted_direction():
    rng = np.random.default_rng(0)
    n, layers, h = 64, 2, 32
    planted = rng.standard_normal(h)
    planted /= np.linalg.norm(planted)
    neg = rng.standard_normal((n, layers, h))
    pos = neg + 3.0 * planted + 0.3 * rng.standard_normal((n, layers, h))
    for method in ("diffmean", "pca"):
        d = directions_from(pos, neg, method)  # [L, H]
        for la in range(layers):
            cos = d[la] @ planted / np.linalg.norm(d[la])
            assert cos > 0.98, (method, cos)
            assert np.linalg.norm(d[la]) == pytest.approx(3.0, rel=0.1)


def test_demo_pairs_ship_with_the_package():
    from vsteer.vector_cli import _pairs_path

    pairs = load_pairs(_pairs_path(None))
    assert len(pairs) >= 32 and all(p != n for p, n in pairs)


@pytest.mark.engine
def test_runtime_capture_matches_transformers_hidden_states(capturer, model_dir):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    prompts = ["The quick brown fox jumps over the lazy dog.", "Steering vectors are fun"]
    layers = [0, 7, 15, 28]  # not the last: transformers' final entry is post-norm
    ours = capturer.capture(prompts, layers)
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float32)
    for prompt, got in zip(prompts, ours, strict=True):
        ids = tok(prompt, return_tensors="pt")
        with torch.no_grad():
            hs = model(**ids, output_hidden_states=True).hidden_states
        assert got.shape == (ids.input_ids.shape[1], len(layers), 576)
        for j, la in enumerate(layers):
            ref = hs[la + 1][0].numpy()  # [P, H]: output of decoder layer la
            rel = np.linalg.norm(got[:, j] - ref, axis=1) / np.linalg.norm(ref, axis=1)
            assert rel.max() < 2e-3, (la, rel.max())  # fp32 vs fp32, different kernels


@pytest.mark.engine
def test_extract_cli_end_to_end(tmp_path, demo_vector):
    out = subprocess.run(
        [sys.executable, "-m", "vsteer.cli", "vector", "extract", "--name", "cli-joy",
         "--layers", "6-8", "--artifacts", str(tmp_path)],
        capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-4000:]
    assert "capturing hidden states" in out.stderr  # the progress bar
    from vsteer.artifacts import ArtifactStore

    vec = ArtifactStore(tmp_path).get_vector("cli-joy").vector
    assert vec.layers == [6, 7, 8] and vec.method == "diffmean"
    assert vec.provenance["num_pairs"] >= 32
    for la in vec.layers:  # bf16 CLI engine vs the fp32 fixture: same direction
        a, b = vec.directions[la], demo_vector.directions[la]
        assert a @ b / np.linalg.norm(a) / np.linalg.norm(b) > 0.95
