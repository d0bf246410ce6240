"""`vsteer sae train` (SAELens on the model's own text) and `vsteer sae contrast`
(vsteer/sae/train.py, vsteer/sae/contrast.py)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from vsteer.artifacts import ArtifactStore, ModelFingerprint
from vsteer.artifacts.sae import SparseAutoencoder
from vsteer.sae.contrast import contrast_features
from vsteer.sae.saelens_import import read_saelens
from vsteer.sae.train import TrainConfig, save, train_sae

from conftest import vsteer_cli


def _sparse_data(n: int, d: int, k: int, seed: int) -> torch.Tensor:
    """[n, d] sums of a few of k random directions with non-negative weights."""
    g = torch.Generator().manual_seed(seed)
    dictionary = torch.randn(k, d, generator=g)
    codes = (torch.rand(n, k, generator=g) < 0.05) * torch.rand(n, k, generator=g) * 4
    return codes @ dictionary


def test_trained_sae_reconstructs_and_imports_as_saelens_encodes(tmp_path):
    acts = _sparse_data(4000, 32, 48, seed=1)
    cfg = TrainConfig(layer=2, features=96, steps=300, batch=128, l1=0.5)
    sae, report = train_sae(acts, cfg, "tiny")
    assert report.tokens + report.held_out_tokens == len(acts)
    untrained = train_sae(acts, TrainConfig(layer=2, features=96, steps=1, batch=128), "tiny")[1]
    assert report.explained_variance > max(0.75, untrained.explained_variance + 0.25)
    assert 0 < report.l0 < cfg.features
    save(sae, tmp_path / "sae", report, cfg)
    imported = read_saelens(tmp_path / "sae", ModelFingerprint("LlamaForCausalLM", 32, 4))
    assert (imported.layer, imported.num_features) == (2, 96)
    np.testing.assert_allclose(np.linalg.norm(imported.W_dec, axis=1), 1.0, rtol=1e-5)
    x = acts[:64]
    with torch.no_grad():
        want = sae.encode(x).numpy()
    np.testing.assert_allclose(imported.encode(x.numpy()), want, rtol=1e-5, atol=1e-5)
    assert json.loads((tmp_path / "sae" / "train.json").read_text())["report"]["l0"] == report.l0


def test_too_few_tokens_for_a_batch_is_an_error():
    with pytest.raises(ValueError, match="fewer than one batch"):
        train_sae(torch.randn(50, 8), TrainConfig(layer=0, batch=64), "tiny")


def test_cli_trains_on_sampled_replies_and_imports(model_dir, tmp_path):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in (
        "Describe a rainy afternoon.", "Tell me about your favourite food.",
        "What makes a good friend?", "Write a line about the sea.")))
    artifacts = tmp_path / "artifacts"
    common = ["--model", str(model_dir), "--artifacts", str(artifacts)]
    out = vsteer_cli("sae", "train", "--name", "t", "--layer", "3", "--prompts", str(prompts),
                     "--samples", "2", "--reply-tokens", "16", "--features", "64",
                     "--steps", "400", "--batch", "64", *common, timeout=600)
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["tokens"] + summary["held_out_tokens"] > 8 * 16  # template + replies
    assert summary["explained_variance"] > 0.3
    stored = ArtifactStore(artifacts).get("sae", "t").value
    assert (stored.layer, stored.num_features) == (3, 64)
    assert stored.source["hook_name"] == "blocks.3.hook_resid_post"
    assert "t\tlayer 3\t64 features" in vsteer_cli("sae", "list", *common[2:], timeout=120)
    again = subprocess.run([sys.executable, "-m", "vsteer.cli", "sae", "train", "--name", "t",
                            "--layer", "3", *common], capture_output=True, text=True)
    assert again.returncode == 1 and "exists" in again.stderr


def test_cli_refuses_a_layer_the_model_lacks(model_dir, fingerprint, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "vsteer.cli", "sae", "train", "--name", "t",
                           "--layer", str(fingerprint.num_layers), "--model", str(model_dir),
                           "--artifacts", str(tmp_path)], capture_output=True, text=True)
    assert proc.returncode == 2 and "out of range" in proc.stderr


def _mean_stream(m, texts: list[str], layer: int) -> np.ndarray:
    """[H]: mean over texts of each text's token-mean stream (first token dropped)."""
    rows = []
    for t in texts:
        ids = m.tok(t)["input_ids"]
        rows.append(m.streams([ids])[layer][0, 1:].mean(0).numpy())
    return np.mean(rows, axis=0)


def test_contrast_ranks_the_feature_along_the_difference_first(model_dir, fingerprint):
    from vsteer.extract import load_pairs
    from vsteer.refusal.hf_model import HFModel
    from vsteer.vector_cli import _pairs_path

    pairs = load_pairs(_pairs_path(None))[:4]
    m = HFModel(str(model_dir))
    layer, h = 7, fingerprint.hidden_size
    diff = (_mean_stream(m, [p for p, _ in pairs], layer)
            - _mean_stream(m, [n for _, n in pairs], layer))  # [H]
    direction = (diff / np.linalg.norm(diff)).astype(np.float32)
    rng = np.random.default_rng(0)
    w_enc = rng.standard_normal((h, 6)).astype(np.float32) * 1e-3  # [H, F]
    w_enc[:, 2], w_enc[:, 4] = direction, -direction
    b_enc = np.zeros(6, np.float32)
    b_enc[[2, 4]] = 1e4  # keeps features 2 and 4 in ReLU's linear range on every token
    sae = SparseAutoencoder(layer, "standard", w_enc, b_enc, np.ascontiguousarray(w_enc.T),
                            np.zeros(h, np.float32), None, False, fingerprint)
    ranked = contrast_features(m, sae, pairs)
    # linear there, so the scores are exactly ±(diff · direction) = ±|diff|
    assert ranked[0].feature == 2 and ranked[-1].feature == 4
    assert ranked[0].score == pytest.approx(np.linalg.norm(diff), rel=1e-3)
    assert ranked[-1].score == pytest.approx(-np.linalg.norm(diff), rel=1e-3)
    assert ranked[0].score == pytest.approx(ranked[0].positive - ranked[0].negative)
