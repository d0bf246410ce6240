"""Read an SAE saved in SAELens's layout: `cfg.json` + `sae_weights.safetensors`
(`W_enc` [d_in, d_sae], `b_enc`, `W_dec` [d_sae, d_in], `b_dec`, and `threshold` for
JumpReLU), checked against the model vsteer serves.

The hook must be the residual stream: `blocks.L.hook_resid_post` (vsteer layer L, the
stream after decoder layer L) or `blocks.L.hook_resid_pre` (layer L - 1); the
transformers-style `model.layers.L` names layer L's output. The cfg may keep
`hook_name` and `model_name` at its top (SAELens before 6) or under `metadata`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np

from vsteer.artifacts.fingerprint import ModelFingerprint
from vsteer.artifacts.sae import ARCHITECTURES, SparseAutoencoder
from vsteer.artifacts.tensors_file import ArtifactError

_RESID = re.compile(r"^blocks\.(\d+)\.hook_resid_(pre|post)$")
_HF_LAYER = re.compile(r"^model\.layers\.(\d+)$")


def hook_layer(hook_name: str) -> int:
    """The vsteer layer whose output stream the hook reads."""
    if m := _RESID.match(hook_name):
        layer = int(m.group(1)) - (m.group(2) == "pre")
        if layer < 0:
            raise ArtifactError("blocks.0.hook_resid_pre is the embeddings, not a decoder "
                                "layer's output: vsteer cannot steer there")
        return layer
    if m := _HF_LAYER.match(hook_name):
        return int(m.group(1))
    raise ArtifactError(f"hook {hook_name!r} is not the residual stream after a decoder "
                        "layer (blocks.L.hook_resid_post, blocks.L.hook_resid_pre or "
                        "model.layers.L)")


def _cfg_value(cfg: dict[str, Any], key: str) -> Any:
    value = cfg.get(key)
    return value if value is not None else (cfg.get("metadata") or {}).get(key)


def read_saelens(directory: str | Path, fingerprint: ModelFingerprint) -> SparseAutoencoder:
    d = Path(directory)
    try:
        cfg = json.loads((d / "cfg.json").read_text())
    except (OSError, ValueError) as e:
        raise ArtifactError(f"{d / 'cfg.json'}: {e}") from e
    arch = str(cfg.get("architecture", "standard")).lower()
    if arch not in ARCHITECTURES:
        raise ArtifactError(f"SAE architecture {arch!r}: vsteer reads "
                            f"{', '.join(ARCHITECTURES)}")
    norm = cfg.get("normalize_activations", "none")
    if norm not in (None, "none"):
        raise ArtifactError(f"normalize_activations={norm!r}: vsteer applies SAEs to the "
                            "raw stream only ('none')")
    hook = _cfg_value(cfg, "hook_name")
    if not hook:
        raise ArtifactError("cfg.json names no hook_name")
    layer = hook_layer(str(hook))
    d_in = cfg.get("d_in")
    if d_in is not None and int(d_in) != fingerprint.hidden_size:
        raise ArtifactError(f"SAE d_in {d_in} differs from the model's hidden size "
                            f"{fingerprint.hidden_size}")
    if layer >= fingerprint.num_layers:
        raise ArtifactError(f"SAE hook {hook!r} is layer {layer}; the model has "
                            f"{fingerprint.num_layers} layers")
    from safetensors.numpy import load_file

    try:
        t = load_file(str(d / "sae_weights.safetensors"))
    except (OSError, ValueError) as e:
        raise ArtifactError(f"{d / 'sae_weights.safetensors'}: {e}") from e
    missing = [k for k in ("W_enc", "b_enc", "W_dec", "b_dec") if k not in t]
    if arch == "jumprelu" and "threshold" not in t:
        missing.append("threshold")
    if missing:
        raise ArtifactError(f"sae_weights.safetensors lacks {', '.join(missing)}")
    f32 = {k: np.asarray(v, np.float32) for k, v in t.items()}
    d_sae = cfg.get("d_sae")
    if d_sae is not None and f32["W_enc"].shape[-1] != int(d_sae):
        raise ArtifactError(f"W_enc has {f32['W_enc'].shape[-1]} features, cfg d_sae {d_sae}")
    return SparseAutoencoder(
        layer=layer, architecture=arch, W_enc=f32["W_enc"], b_enc=f32["b_enc"],
        W_dec=f32["W_dec"], b_dec=f32["b_dec"],
        threshold=f32.get("threshold") if arch == "jumprelu" else None,
        apply_b_dec_to_input=bool(cfg.get("apply_b_dec_to_input", True)),
        fingerprint=fingerprint,
        source={k: cfg[k] for k in ("model_name", "hook_name", "d_in", "d_sae",
                                    "architecture") if k in cfg} | {"hook_name": hook})
