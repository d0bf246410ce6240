"""`RefusalDirection`: what `vsteer refusal extract` (and `calibrate`) produce.

Two per-layer families, both difference-in-means:
  - `refusal[l]`: the behaviour direction, mean stream over refusal responses minus
    over compliant ones (same prompts, CAST's "behaviour vector"); what `force` adds,
    `ablate` projects out, and `guard` / `controller` add when they fire;
  - `condition[l]`: harmful minus harmless prompts at the chat template's
    post-instruction positions (Arditi et al.'s direction); what `guard` compares the
    prompt with.
`layer` is the force layer picked on held-out prompts; `calibration` (from
`vsteer refusal calibrate`) holds the guard's condition layer and threshold, and the
guard's score:
    cosine (kind "cosine", older artifacts): s = cos(x_l[last prompt token], condition[l])
    linear (kind "linear"): v = mean of x_l over the last `window` prompt tokens (the
        chat template's post-instruction tokens), s = sigmoid(v · guard_weight + bias)
    the guard fires when s >= threshold
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import numpy as np

from vsteer.artifacts.fingerprint import ModelFingerprint
from vsteer.artifacts.tensors_file import (
    ArtifactError,
    load_blob,
    meta_fingerprint,
    meta_json,
    per_layer,
    save_blob,
)

KIND = "direction"


GUARD_KINDS = ("cosine", "linear")


@dataclass(frozen=True)
class GuardCalibration:
    condition_layer: int
    threshold: float  # on the guard's score (see the module docstring)
    f1: float
    scores: dict[str, Any] = field(default_factory=dict)  # per-layer figures etc.
    kind: str = "cosine"
    bias: float = 0.0  # linear
    window: int = 1  # linear: last prompt tokens averaged


@dataclass(frozen=True)
class RefusalDirection:
    refusal: dict[int, np.ndarray]  # layer -> [H]
    condition: dict[int, np.ndarray]  # layer -> [H]
    layer: int  # force layer
    fingerprint: ModelFingerprint
    scores: dict[str, Any] = field(default_factory=dict)
    calibration: GuardCalibration | None = None
    provenance: dict[str, Any] = field(default_factory=dict)
    created: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    guard_weight: np.ndarray | None = None  # [H], linear guards

    def __post_init__(self) -> None:
        n = self.fingerprint.num_layers
        if sorted(self.refusal) != list(range(n)) or sorted(self.condition) != list(range(n)):
            raise ArtifactError(f"a direction needs refusal and condition tensors for all {n} "
                                "layers")
        if not 0 <= self.layer < n:
            raise ArtifactError(f"force layer {self.layer} is out of range")
        c = self.calibration
        if c is not None and not 0 <= c.condition_layer < self.layer:
            raise ArtifactError("the guard's condition layer must come before the force layer")
        if c is not None and c.kind not in GUARD_KINDS:
            raise ArtifactError(f"unknown guard kind {c.kind!r}")
        linear = c is not None and c.kind == "linear"
        w = self.guard_weight
        if linear and (w is None or w.shape != (self.fingerprint.hidden_size,)
                       or not np.all(np.isfinite(w)) or c.window < 1):
            raise ArtifactError("a linear guard needs a finite [H] weight and a window >= 1")
        if not linear and w is not None:
            raise ArtifactError("a guard weight needs a linear guard calibration")

    def unit_condition(self, layer: int) -> np.ndarray:
        v = self.condition[layer]
        return v / max(float(np.linalg.norm(v)), 1e-12)

    def with_calibration(self, cal: GuardCalibration) -> RefusalDirection:
        return replace(self, calibration=cal)

    def to_safetensors_bytes(self) -> bytes:
        tensors = {f"refusal.{la}": v for la, v in self.refusal.items()}
        tensors.update({f"condition.{la}": v for la, v in self.condition.items()})
        if self.guard_weight is not None:
            tensors["guard_weight"] = self.guard_weight.astype(np.float32)
        meta = {"kind": KIND, "fingerprint": json.dumps(self.fingerprint.to_dict()),
                "layer": str(self.layer), "scores": json.dumps(self.scores),
                "provenance": json.dumps(self.provenance), "created": self.created}
        if self.calibration is not None:
            meta["calibration"] = json.dumps(self.calibration.__dict__)
        return save_blob(tensors, meta)

    @classmethod
    def from_safetensors_bytes(cls, data: bytes) -> RefusalDirection:
        tensors, meta = load_blob(data, KIND)
        fp = meta_fingerprint(meta)
        cal = meta_json(meta, "calibration")
        try:
            calibration = GuardCalibration(**cal) if cal is not None else None
            layer = int(meta["layer"])
        except (KeyError, TypeError, ValueError) as e:
            raise ArtifactError(f"bad direction metadata: {e}") from e
        gw = tensors.get("guard_weight")
        return cls(per_layer(tensors, "refusal", fp), per_layer(tensors, "condition", fp),
                   layer, fp, meta_json(meta, "scores", {}), calibration,
                   meta_json(meta, "provenance", {}), meta.get("created", ""),
                   None if gw is None else np.asarray(gw, np.float32).reshape(-1))
