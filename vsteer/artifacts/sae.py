"""`SparseAutoencoder`: an SAE on the residual stream after one decoder layer, imported
from SAELens's saved layout (`vsteer sae import`).

Semantics (x = the stream after `layer`, transformers' hidden_states[layer + 1], fp32):
    pre[f]  = (x - b_dec · apply_b_dec_to_input) · W_enc[:, f] + b_enc[f]
    act[f]  = relu(pre[f])                                 architecture "standard"
            | pre[f] · (pre[f] > threshold[f])             architecture "jumprelu"
    x̂       = act · W_dec + b_dec
Controls (plugins/sae_control.py):
    add f, value:    x += value · W_dec[f]                 (= steering with W_dec[f])
    clamp f, value:  x += (value - act[f](x)) · W_dec[f]   (the feature's activation
                                                             set to value, to first order)
    monitor top_k:   the k largest act[f] at the last prompt token (and per token)
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np

from vsteer.artifacts.fingerprint import ModelFingerprint
from vsteer.artifacts.tensors_file import ArtifactError, load_blob, meta_fingerprint, save_blob

KIND = "sae"
ARCHITECTURES = ("standard", "jumprelu")


@dataclass(frozen=True)
class SparseAutoencoder:
    layer: int
    architecture: str  # standard | jumprelu
    W_enc: np.ndarray  # [H, F] float32
    b_enc: np.ndarray  # [F]
    W_dec: np.ndarray  # [F, H]
    b_dec: np.ndarray  # [H]
    threshold: np.ndarray | None  # [F], jumprelu only
    apply_b_dec_to_input: bool
    fingerprint: ModelFingerprint
    source: dict[str, Any] = field(default_factory=dict)  # the imported cfg.json
    created: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))

    def __post_init__(self) -> None:
        h, n = self.fingerprint.hidden_size, self.fingerprint.num_layers
        if self.architecture not in ARCHITECTURES:
            raise ArtifactError(f"SAE architecture {self.architecture!r} is not one of "
                                f"{', '.join(ARCHITECTURES)}")
        if not 0 <= self.layer < n:
            raise ArtifactError(f"SAE layer {self.layer} is out of range (model has {n})")
        f = self.W_enc.shape[1] if self.W_enc.ndim == 2 else -1
        want = {"W_enc": (h, f), "b_enc": (f,), "W_dec": (f, h), "b_dec": (h,)}
        if self.architecture == "jumprelu":
            want["threshold"] = (f,)
        for k, shape in want.items():
            arr = getattr(self, k)
            if arr is None or arr.shape != shape:
                got = None if arr is None else arr.shape
                raise ArtifactError(f"SAE tensor {k} has shape {got}, expected {shape} "
                                    f"(model hidden size {h})")
            if not np.all(np.isfinite(arr)):
                raise ArtifactError(f"SAE tensor {k} is not finite")

    @property
    def num_features(self) -> int:
        return int(self.W_enc.shape[1])

    def encode(self, x: np.ndarray) -> np.ndarray:
        """act [..., F] for streams x [..., H] (numpy twin of the worker's torch code)."""
        x = np.asarray(x, np.float32)
        if self.apply_b_dec_to_input:
            x = x - self.b_dec
        pre = x @ self.W_enc + self.b_enc
        if self.architecture == "jumprelu":
            return np.where(pre > self.threshold, pre, 0.0).astype(np.float32)
        return np.maximum(pre, 0.0)

    def feature_encoder(self, f: int) -> tuple[np.ndarray, float, float]:
        """(enc [H], bias, threshold) with act[f](x) = pre if pre > threshold else 0,
        pre = x · enc + bias: feature f's encoder with b_dec folded into the bias."""
        enc = self.W_enc[:, f]
        bias = float(self.b_enc[f]) - (float(self.b_dec @ enc) if self.apply_b_dec_to_input
                                       else 0.0)
        thr = float(self.threshold[f]) if self.threshold is not None else 0.0
        return enc, bias, thr

    def to_safetensors_bytes(self) -> bytes:
        tensors = {"W_enc": self.W_enc, "b_enc": self.b_enc, "W_dec": self.W_dec,
                   "b_dec": self.b_dec}
        if self.threshold is not None:
            tensors["threshold"] = self.threshold
        meta = {"kind": KIND, "fingerprint": json.dumps(self.fingerprint.to_dict()),
                "layer": str(self.layer), "architecture": self.architecture,
                "apply_b_dec_to_input": json.dumps(self.apply_b_dec_to_input),
                "source": json.dumps(self.source), "created": self.created}
        return save_blob(tensors, meta)

    @classmethod
    def from_safetensors_bytes(cls, data: bytes) -> SparseAutoencoder:
        tensors, meta = load_blob(data, KIND)
        try:
            t = {k: np.asarray(v, np.float32) for k, v in tensors.items()}
            return cls(layer=int(meta["layer"]), architecture=meta["architecture"],
                       W_enc=t["W_enc"], b_enc=t["b_enc"], W_dec=t["W_dec"],
                       b_dec=t["b_dec"], threshold=t.get("threshold"),
                       apply_b_dec_to_input=json.loads(meta["apply_b_dec_to_input"]),
                       fingerprint=meta_fingerprint(meta),
                       source=json.loads(meta.get("source", "{}")),
                       created=meta.get("created", ""))
        except (KeyError, ValueError) as e:
            raise ArtifactError(f"malformed SAE artifact: {e}") from e
