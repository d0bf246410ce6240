"""`RefusalController`: the learned weighted controller (`vsteer refusal train-controller`).

Semantics, at the request's last prompt token, stream x ([H]) after `input_layer`:
    z = (x - mu) / sigma
    o = W2 · relu(W1ᵀ z + b1) + b2                 # [1 + L]
    p = sigmoid(o[0])                               # score: does this prompt need refusal?
    w[l] = w_max · sigmoid(o[1 + l]) for l > input_layer, else 0
    if p >= threshold: add w[l] · refusal[l] at every layer l for the rest of the request
`refusal` comes from the direction the controller was trained with (`direction`,
checked by `direction_sha256`).
"""

from __future__ import annotations

import json
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

KIND = "controller"
_TENSORS = ("w1", "b1", "w2", "b2", "mu", "sigma")


@dataclass(frozen=True)
class RefusalController:
    w1: np.ndarray  # [H, M]
    b1: np.ndarray  # [M]
    w2: np.ndarray  # [M, 1 + L]
    b2: np.ndarray  # [1 + L]
    mu: np.ndarray  # [H]
    sigma: np.ndarray  # [H]
    input_layer: int
    w_max: float
    threshold: float
    direction: str
    direction_sha256: str
    fingerprint: ModelFingerprint
    scores: dict[str, Any] = field(default_factory=dict)
    created: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))

    def __post_init__(self) -> None:
        h, n = self.fingerprint.hidden_size, self.fingerprint.num_layers
        m = self.w1.shape[1] if self.w1.ndim == 2 else -1
        want = {"w1": (h, m), "b1": (m,), "w2": (m, 1 + n), "b2": (1 + n,), "mu": (h,),
                "sigma": (h,)}
        for name, shape in want.items():
            arr = getattr(self, name)
            if arr.shape != shape or not np.all(np.isfinite(arr)):
                raise ArtifactError(f"controller tensor {name} has shape {arr.shape}, expected "
                                    f"{shape} and finite values")
        if not 0 <= self.input_layer < n - 1:
            raise ArtifactError(f"controller input layer {self.input_layer} is out of range")

    def evaluate(self, x: np.ndarray) -> tuple[float, np.ndarray]:
        """(p, per-layer weights [L]) for one stream vector x [H] (numpy twin of the
        runtime's torch code, used by tests)."""
        z = (x.astype(np.float32) - self.mu) / self.sigma
        o = np.maximum(z @ self.w1 + self.b1, 0.0) @ self.w2 + self.b2
        p = 1.0 / (1.0 + np.exp(-o[0]))
        w = self.w_max / (1.0 + np.exp(-o[1:]))
        w[: self.input_layer + 1] = 0.0
        return float(p), w.astype(np.float32)

    def to_safetensors_bytes(self) -> bytes:
        meta = {"kind": KIND, "fingerprint": json.dumps(self.fingerprint.to_dict()),
                "input_layer": str(self.input_layer), "w_max": repr(self.w_max),
                "threshold": repr(self.threshold), "direction": self.direction,
                "direction_sha256": self.direction_sha256, "scores": json.dumps(self.scores),
                "created": self.created}
        return save_blob({k: getattr(self, k) for k in _TENSORS}, meta)

    @classmethod
    def from_safetensors_bytes(cls, data: bytes) -> RefusalController:
        tensors, meta = load_blob(data, KIND)
        try:
            arrays = {k: np.asarray(tensors[k], np.float32) for k in _TENSORS}
            return cls(**arrays, input_layer=int(meta["input_layer"]),
                       w_max=float(meta["w_max"]), threshold=float(meta["threshold"]),
                       direction=meta["direction"], direction_sha256=meta["direction_sha256"],
                       fingerprint=meta_fingerprint(meta), scores=meta_json(meta, "scores", {}),
                       created=meta.get("created", ""))
        except (KeyError, ValueError) as e:
            raise ArtifactError(f"bad controller artifact: {e}") from e
