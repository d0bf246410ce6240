"""Write SAEs in SAELens's saved layout (cfg.json + sae_weights.safetensors), as
SAELens's `save_model` does, for import tests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def random_sae(hidden: int, features: int, seed: int = 0, tied_unit: bool = True,
               jumprelu: bool = False) -> dict[str, np.ndarray]:
    """W_dec rows of unit norm; tied_unit: W_enc = W_dec.T, so a clamp on one feature
    lands exactly (dec · enc = 1)."""
    rng = np.random.default_rng(seed)
    dec = rng.standard_normal((features, hidden)).astype(np.float32)
    dec /= np.linalg.norm(dec, axis=1, keepdims=True)
    enc = dec.T.copy() if tied_unit else rng.standard_normal((hidden, features)).astype(
        np.float32) / np.sqrt(hidden)
    t = {"W_enc": enc, "b_enc": (rng.standard_normal(features) * 0.1).astype(np.float32),
         "W_dec": dec, "b_dec": (rng.standard_normal(hidden) * 0.1).astype(np.float32)}
    if jumprelu:
        t["threshold"] = np.abs(rng.standard_normal(features)).astype(np.float32) * 0.5
    return t


def write_saelens(directory: Path, tensors: dict[str, np.ndarray], hook_name: str,
                  architecture: str = "standard", **cfg) -> Path:
    from safetensors.numpy import save_file

    directory.mkdir(parents=True, exist_ok=True)
    d_in, d_sae = tensors["W_enc"].shape
    (directory / "cfg.json").write_text(json.dumps({
        "architecture": architecture, "d_in": int(d_in), "d_sae": int(d_sae),
        "dtype": "float32", "device": "cpu", "apply_b_dec_to_input": True,
        "normalize_activations": "none", "model_name": "SmolLM2-135M",
        "hook_name": hook_name, **cfg}))
    save_file(tensors, str(directory / "sae_weights.safetensors"))
    return directory
