"""`ExitPredictor`: per candidate layer, how likely the token read from that layer
(final norm + LM head, the logit lens) equals the full model's token
(`vsteer exit train`).

Semantics (x_l = residual stream after decoder layer l at the row that samples a
token, fp32; candidate layers k = 0..K-1 at `layers[k]`, each >= 1):
    f_k = [x_l / rms(x_l), cos(x_l, x_{l-1})]           # [H + 1], rms eps 1e-6
    z_k = f_k · weight[k] + bias[k]
    conf_k = sigmoid(z_k)
    exit at the first k with conf_k >= threshold_k      (compared as z_k >= logit)
threshold_k comes from `thresholds[k, g]` for a calibrated agreement target
`targets[g]` (a value > 1 means that layer never reaches the target), or is one raw
confidence for every layer.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np

from vsteer.artifacts.fingerprint import ModelFingerprint
from vsteer.artifacts.tensors_file import (
    ArtifactError,
    load_blob,
    meta_fingerprint,
    meta_json,
    save_blob,
)

KIND = "exit"
RMS_EPS = 1e-6
UNREACHABLE = 2.0  # a threshold no confidence reaches


def confidence_logit(threshold: float) -> float:
    """The logit a confidence threshold compares against (0 -> -inf, >= 1 -> +inf)."""
    if threshold <= 0.0:
        return -math.inf
    if threshold >= 1.0:
        return math.inf
    return math.log(threshold / (1.0 - threshold))


def exit_features(x: np.ndarray, prev: np.ndarray) -> np.ndarray:
    """f = [x / rms(x), cos(x, prev)] for rows x, prev [N, H] -> [N, H + 1] (numpy twin
    of the runtime's torch code)."""
    x = x.astype(np.float32)
    prev = prev.astype(np.float32)
    rms = np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + RMS_EPS)
    cos = np.sum(x * prev, -1) / np.maximum(
        np.linalg.norm(x, axis=-1) * np.linalg.norm(prev, axis=-1), 1e-12)
    return np.concatenate([x / rms, cos[:, None]], axis=-1)


@dataclass(frozen=True)
class ExitPredictor:
    layers: list[int]  # K candidate exit layers, ascending
    weight: np.ndarray  # [K, H + 1]
    bias: np.ndarray  # [K]
    targets: list[float]  # G calibrated agreement targets, ascending
    thresholds: np.ndarray  # [K, G] confidence thresholds (> 1: unreachable)
    default_target: float
    fingerprint: ModelFingerprint
    scores: dict[str, Any] = field(default_factory=dict)
    created: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))

    def __post_init__(self) -> None:
        h, n = self.fingerprint.hidden_size, self.fingerprint.num_layers
        k, g = len(self.layers), len(self.targets)
        if k == 0 or sorted(set(self.layers)) != list(self.layers):
            raise ArtifactError("exit predictor layers must be a non-empty ascending list")
        if not all(1 <= la <= n - 2 for la in self.layers):
            raise ArtifactError(f"exit layers must lie in 1..{n - 2} (model has {n} layers)")
        if self.weight.shape != (k, h + 1) or self.bias.shape != (k,):
            raise ArtifactError(f"exit weight/bias have shapes {self.weight.shape}/"
                                f"{self.bias.shape}, expected {(k, h + 1)}/{(k,)}")
        if self.thresholds.shape != (k, g) or g == 0:
            raise ArtifactError(f"exit thresholds have shape {self.thresholds.shape}, "
                                f"expected {(k, g)}")
        if sorted(self.targets) != list(self.targets) or not all(0 < t <= 1 for t in self.targets):
            raise ArtifactError("exit targets must be ascending agreement rates in (0, 1]")
        if self.default_target not in self.targets:
            raise ArtifactError(f"default target {self.default_target} is not calibrated")
        for name in ("weight", "bias", "thresholds"):
            if not np.all(np.isfinite(getattr(self, name))):
                raise ArtifactError(f"exit predictor {name} is not finite")

    def thresholds_for(self, target: float) -> list[float]:
        """Per-layer confidence thresholds for an agreement target: those of the
        smallest calibrated target >= `target` (never a looser one)."""
        for g, t in enumerate(self.targets):
            if t >= target - 1e-9:
                return [float(v) for v in self.thresholds[:, g]]
        raise ArtifactError(f"target agreement {target} is above the highest calibrated "
                            f"target {self.targets[-1]}")

    def confidence(self, x: np.ndarray, prev: np.ndarray, k: int) -> np.ndarray:
        """conf_k for rows x, prev [N, H] at candidate k -> [N]."""
        z = exit_features(x, prev).astype(np.float64) @ self.weight[k] + self.bias[k]
        return 1.0 / (1.0 + np.exp(-z))

    def to_safetensors_bytes(self) -> bytes:
        tensors = {"weight": self.weight, "bias": self.bias, "thresholds": self.thresholds}
        meta = {"kind": KIND, "fingerprint": json.dumps(self.fingerprint.to_dict()),
                "layers": json.dumps(self.layers), "targets": json.dumps(self.targets),
                "default_target": repr(self.default_target),
                "scores": json.dumps(self.scores), "created": self.created}
        return save_blob(tensors, meta)

    @classmethod
    def from_safetensors_bytes(cls, data: bytes) -> ExitPredictor:
        tensors, meta = load_blob(data, KIND)
        try:
            return cls(layers=[int(v) for v in json.loads(meta["layers"])],
                       weight=np.asarray(tensors["weight"], np.float32),
                       bias=np.asarray(tensors["bias"], np.float32),
                       targets=[float(v) for v in json.loads(meta["targets"])],
                       thresholds=np.asarray(tensors["thresholds"], np.float32),
                       default_target=float(meta["default_target"]),
                       fingerprint=meta_fingerprint(meta),
                       scores=meta_json(meta, "scores", {}), created=meta.get("created", ""))
        except (KeyError, ValueError, TypeError) as e:
            raise ArtifactError(f"exit predictor file is malformed: {e}") from None
