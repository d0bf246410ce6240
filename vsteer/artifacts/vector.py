"""`SteeringVector`: per-layer directions as a value type (+, -, * scalar, save/load).

Layer convention: layer l means the residual stream *after* decoder layer l (0-based),
i.e. transformers' `output_hidden_states[l + 1]`, and llama.cpp's `direction.l`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import numpy as np

from vsteer.artifacts.fingerprint import ModelFingerprint
from vsteer.artifacts.tensors_file import ArtifactError, load_blob, save_blob

KIND = "vector"


@dataclass(frozen=True)
class SteeringVector:
    directions: dict[int, np.ndarray]  # layer -> [H] float32
    fingerprint: ModelFingerprint
    method: str = "unknown"
    provenance: dict[str, Any] = field(default_factory=dict)
    created: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))

    def __post_init__(self) -> None:
        if not self.directions:
            raise ArtifactError("a steering vector needs at least one layer")
        for layer, d in self.directions.items():
            if not 0 <= int(layer) < self.fingerprint.num_layers:
                raise ArtifactError(
                    f"layer {layer} is out of range for a {self.fingerprint.num_layers}-layer model"
                )
            if d.shape != (self.fingerprint.hidden_size,):
                raise ArtifactError(
                    f"layer {layer} has shape {tuple(d.shape)}, "
                    f"expected ({self.fingerprint.hidden_size},)"
                )
            if not np.all(np.isfinite(d)):
                raise ArtifactError(f"layer {layer} holds non-finite values")

    @property
    def layers(self) -> list[int]:
        return sorted(self.directions)

    def _combine(self, other: SteeringVector, sign: float) -> SteeringVector:
        if other.fingerprint != self.fingerprint:
            raise ArtifactError("cannot combine vectors made for different models")
        layers = set(self.directions) | set(other.directions)
        zero = np.zeros(self.fingerprint.hidden_size, np.float32)
        out = {
            la: self.directions.get(la, zero) + sign * other.directions.get(la, zero)
            for la in layers
        }
        return replace(self, directions=out, method="combined", provenance={})

    def __add__(self, other: SteeringVector) -> SteeringVector:
        return self._combine(other, 1.0)

    def __sub__(self, other: SteeringVector) -> SteeringVector:
        return self._combine(other, -1.0)

    def __mul__(self, k: float) -> SteeringVector:
        out = {la: (d * np.float32(k)).astype(np.float32) for la, d in self.directions.items()}
        return replace(self, directions=out)

    __rmul__ = __mul__

    def __neg__(self) -> SteeringVector:
        return self * -1.0

    # -- safetensors ------------------------------------------------------------------
    def to_safetensors_bytes(self) -> bytes:
        return save_blob({f"layer.{la}": d for la, d in self.directions.items()},
                         self.metadata())

    def metadata(self) -> dict[str, str]:
        return {
            "kind": KIND,
            "method": self.method,
            "fingerprint": json.dumps(self.fingerprint.to_dict()),
            "layers": json.dumps(self.layers),
            "created": self.created,
            "provenance": json.dumps(self.provenance),
        }

    @classmethod
    def from_safetensors_bytes(cls, data: bytes) -> SteeringVector:
        return cls.from_parts(*load_blob(data, KIND))

    @classmethod
    def from_parts(cls, tensors: dict[str, np.ndarray], meta: dict[str, str]) -> SteeringVector:
        if meta.get("kind") != KIND:
            raise ArtifactError(f"artifact kind is {meta.get('kind')!r}, expected {KIND!r}")
        try:
            fp = ModelFingerprint.from_dict(json.loads(meta["fingerprint"]))
            directions = {}
            for key, arr in tensors.items():
                if not key.startswith("layer."):
                    raise ArtifactError(f"unexpected tensor {key!r}")
                directions[int(key.split(".", 1)[1])] = np.asarray(arr, np.float32).reshape(-1)
            provenance = json.loads(meta.get("provenance", "{}"))
        except (KeyError, ValueError, TypeError) as e:
            raise ArtifactError(f"bad vector metadata: {e}") from e
        return cls(directions, fp, meta.get("method", "unknown"), provenance,
                   meta.get("created", ""))
