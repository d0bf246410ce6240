"""`ExpertSet`: a named set of (layer, expert) pairs of a mixture-of-experts model that
the `experts` control can switch off or force (`{"set": NAME, "op": "off"}`), e.g.
the experts `vsteer experts find` ranks as routed to most more often on one prompt
set than another (MoTE's recipe). Each pair keeps its score (the routing-frequency
difference, positive minus negative) and the frequencies behind it."""

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

KIND = "experts"


@dataclass(frozen=True)
class ExpertSet:
    pairs: list[tuple[int, int]]  # (layer, expert), best first
    scores: list[float]  # per pair: frequency on positive minus on negative prompts
    num_experts: int  # the router's experts (every id is below it)
    fingerprint: ModelFingerprint
    provenance: dict[str, Any] = field(default_factory=dict)
    created: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))

    def __post_init__(self) -> None:
        if not self.pairs:
            raise ArtifactError("an expert set needs at least one (layer, expert)")
        if len(self.scores) != len(self.pairs):
            raise ArtifactError("an expert set needs one score per (layer, expert)")
        if len(set(self.pairs)) != len(self.pairs):
            raise ArtifactError("an expert set lists a (layer, expert) twice")
        for layer, e in self.pairs:
            if not 0 <= layer < self.fingerprint.num_layers:
                raise ArtifactError(f"layer {layer} is out of range for a "
                                    f"{self.fingerprint.num_layers}-layer model")
            if not 0 <= e < self.num_experts:
                raise ArtifactError(f"expert {e} is out of range for {self.num_experts} experts")

    def by_layer(self) -> dict[int, list[int]]:
        out: dict[int, list[int]] = {}
        for layer, e in self.pairs:
            out.setdefault(layer, []).append(e)
        return {la: sorted(es) for la, es in sorted(out.items())}

    def to_safetensors_bytes(self) -> bytes:
        arr = np.asarray(self.pairs, np.float32).reshape(-1, 2)  # small ints: exact in fp32
        tensors = {"layer": arr[:, 0], "expert": arr[:, 1],
                   "score": np.asarray(self.scores, np.float32)}
        meta = {"kind": KIND, "fingerprint": json.dumps(self.fingerprint.to_dict()),
                "num_experts": str(self.num_experts), "created": self.created,
                "provenance": json.dumps(self.provenance)}
        return save_blob(tensors, meta)

    @classmethod
    def from_safetensors_bytes(cls, data: bytes) -> ExpertSet:
        tensors, meta = load_blob(data, KIND)
        try:
            layers = np.asarray(tensors["layer"]).astype(np.int64).tolist()
            experts = np.asarray(tensors["expert"]).astype(np.int64).tolist()
            return cls(pairs=list(zip(layers, experts, strict=True)),
                       scores=[float(s) for s in tensors["score"]],
                       num_experts=int(meta["num_experts"]),
                       fingerprint=meta_fingerprint(meta),
                       provenance=meta_json(meta, "provenance", {}),
                       created=meta.get("created", ""))
        except (KeyError, ValueError, TypeError) as e:
            raise ArtifactError(f"expert set file is malformed: {e}") from None
