"""`vsteer experts find` on a random tiny Mixtral (tests/tiny_models.py) through the
offline engine: the saved set's pairs and scores equal MoTE's contrast computed from
transformers' own routers over the same tokens (prompt only: --max-tokens 1), the
per-layer cap keeps k experts on, the plot is written, and the set lists and resolves."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from vsteer.artifacts import ArtifactStore

from tiny_models import LAYERS, build_tiny_model

pytestmark = pytest.mark.engine

E, K, TOP = 8, 2, 12
POSITIVE = ["Tell me a story about a dragon.", "Describe a castle at night.",
            "Write a poem about knights.", "What do wizards eat?", "Invent a magic spell."]
NEGATIVE = ["What is 17 times 3?", "List three prime numbers.", "Convert 5 km to miles.",
            "Explain long division.", "What is the square root of 81?"]


def _jsonl(path, prompts):
    path.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in prompts))
    return path


def hf_shares(hf, tok, prompts) -> np.ndarray:
    """[L, E]: share of the prompts' token rows each router sends to each expert."""
    from vsteer.chat import chat_text

    counts, rows = np.zeros((LAYERS, E)), 0
    for p in prompts:
        ids = tok(chat_text(tok, p), add_special_tokens=False, return_tensors="pt").input_ids
        picks = []
        hooks = [layer.mlp.gate.register_forward_hook(
            lambda _m, _a, out, picks=picks: picks.append(out[2]))
            for layer in hf.model.layers]
        try:
            with torch.no_grad():
                hf(ids)
        finally:
            for h in hooks:
                h.remove()
        for la, idx in enumerate(picks):
            np.add.at(counts[la], idx.flatten().numpy(), 1)
        rows += ids.shape[1]
    return counts / rows


def test_find_ranks_experts_as_transformers_routes_them(model_dir, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    d = build_tiny_model("mixtral", model_dir, tmp_path / "model", seed=1,
                         num_local_experts=E)
    art = tmp_path / "artifacts"
    cmd = [sys.executable, "-m", "vsteer.cli", "experts", "find", "--model", str(d),
           "--artifacts", str(art), "--name", "story",
           "--positive", str(_jsonl(tmp_path / "p.jsonl", POSITIVE)),
           "--negative", str(_jsonl(tmp_path / "n.jsonl", NEGATIVE)),
           "--top", str(TOP), "--max-tokens", "1"]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    out = json.loads(run.stdout.strip().splitlines()[-1])
    s = ArtifactStore(art).get("experts", "story").value
    assert [list(p) for p in s.pairs] == [[r["layer"], r["expert"]] for r in out["pairs"]]
    assert s.scores == sorted(s.scores, reverse=True) and min(s.scores) > 0
    assert all(len(es) <= E - K for es in s.by_layer().values())
    assert (art / "reports" / "experts-story.png").stat().st_size > 1000

    hf = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(d)
    diff = hf_shares(hf, tok, POSITIVE) - hf_shares(hf, tok, NEGATIVE)
    for (la, e), score in zip(s.pairs, s.scores, strict=True):
        assert score == pytest.approx(diff[la, e], abs=1e-6)
    # the set holds the best pairs (up to the per-layer cap, which `diff` may not hit)
    capped = len(s.pairs) < TOP or any(len(es) == E - K for es in s.by_layer().values())
    if not capped:
        best = np.sort(diff.reshape(-1))[::-1][:TOP]
        np.testing.assert_allclose(s.scores, best, atol=1e-6)

    listed = subprocess.run([sys.executable, "-m", "vsteer.cli", "experts", "list",
                             "--artifacts", str(art)], capture_output=True, text=True)
    assert listed.returncode == 0 and listed.stdout.startswith("story: ")
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert again.returncode == 1 and "exists" in again.stderr


def test_find_refuses_a_dense_model_before_starting_an_engine(model_dir, tmp_path):
    run = subprocess.run([sys.executable, "-m", "vsteer.cli", "experts", "find", "--model",
                          str(model_dir), "--artifacts", str(tmp_path), "--name", "x"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 2
    assert "not a mixture-of-experts model (LlamaForCausalLM)" in run.stderr
    assert not (tmp_path / "experts").exists()
