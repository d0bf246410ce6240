"""`HallucinationProbe`: a classifier on hidden states that scores how likely the model
is to answer a prompt wrongly (`vsteer probe train`).

Semantics (x[t] = residual stream after `layer` at prompt token t, fp32):
    v = mean_t x[t]            (pooling "mean", every prompt token)
      | x[last prompt token]   (pooling "last")
    linear:  p = sigmoid(v · weight + bias)        (standardization folded into weight/bias)
    mlp:     p = sigmoid(w2 · relu(W1ᵀ ((v - mu) / sigma) + b1) + b2)
    p >= threshold: the probe fires (annotate / abstain / mitigate)
    mitigate: add scale · truth[l] at l in mitigate_layers for the rest of the request,
              truth[l] = mean(x_last | correct) - mean(x_last | wrong) at layer l
Per-token probe (optional, token_layer >= 0), at the position that samples each token:
    q = sigmoid(x[t] · token_weight + token_bias)
Risk calibration (optional): p on calibration questions the probe was not fit on and
whether each answer was wrong; `hallucination.max_error` turns it into a threshold
(vsteer/probe/conformal.py).
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

KIND = "probe"
POOLINGS = ("mean", "last")
TYPES = ("linear", "mlp")


@dataclass(frozen=True)
class HallucinationProbe:
    layer: int
    pooling: str  # mean | last
    probe_type: str  # linear | mlp
    tensors: dict[str, np.ndarray]  # weight [H] | w1 [H,M], b1 [M], w2 [M], mu, sigma [H]
    bias: float  # linear: bias; mlp: b2
    threshold: float
    truth: np.ndarray  # [L, H]
    mitigate_layers: list[int]
    fingerprint: ModelFingerprint
    token_layer: int = -1
    token_weight: np.ndarray | None = None  # [H]
    token_bias: float = 0.0
    conformal_scores: np.ndarray | None = None  # [C] p on calibration questions
    conformal_wrong: np.ndarray | None = None  # [C] 1.0 where the answer was wrong
    scores: dict[str, Any] = field(default_factory=dict)
    created: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))

    def __post_init__(self) -> None:
        h, n = self.fingerprint.hidden_size, self.fingerprint.num_layers
        if self.pooling not in POOLINGS or self.probe_type not in TYPES:
            raise ArtifactError(f"probe pooling/type {self.pooling}/{self.probe_type} unknown")
        if not 0 <= self.layer < n:
            raise ArtifactError(f"probe layer {self.layer} is out of range (model has {n})")
        need = ("weight",) if self.probe_type == "linear" else ("w1", "b1", "w2", "mu", "sigma")
        for k in need:
            if k not in self.tensors or not np.all(np.isfinite(self.tensors[k])):
                raise ArtifactError(f"probe tensor {k} is missing or not finite")
        lead = self.tensors[need[0]].shape[0]
        if lead != h:
            raise ArtifactError(f"probe tensor {need[0]} has {lead} rows, model hidden size {h}")
        if self.truth.shape != (n, h):
            raise ArtifactError(f"probe truth has shape {self.truth.shape}, expected {(n, h)}")
        if any(not self.layer < la < n for la in self.mitigate_layers):
            raise ArtifactError("probe mitigate layers must come after the probe layer")
        if self.token_layer >= 0 and (self.token_layer >= n or self.token_weight is None
                                      or self.token_weight.shape != (h,)):
            raise ArtifactError("probe token layer or token weight is invalid")
        cs, cw = self.conformal_scores, self.conformal_wrong
        if (cs is None) != (cw is None):
            raise ArtifactError("probe risk calibration needs both scores and labels")
        if cs is not None and cw is not None and (
                cs.ndim != 1 or cs.shape != cw.shape or not len(cs)
                or not np.all(np.isfinite(cs)) or not np.isin(cw, (0.0, 1.0)).all()):
            raise ArtifactError("probe risk calibration is malformed")

    @property
    def has_risk_calibration(self) -> bool:
        return self.conformal_scores is not None

    @property
    def has_token_probe(self) -> bool:
        return self.token_layer >= 0

    def score(self, v: np.ndarray) -> float:
        """p for one pooled vector v [H] (numpy twin of the runtime's torch code)."""
        t = self.tensors
        v = v.astype(np.float32)
        if self.probe_type == "linear":
            z = float(v @ t["weight"]) + self.bias
        else:
            h = np.maximum(((v - t["mu"]) / t["sigma"]) @ t["w1"] + t["b1"], 0.0)
            z = float(h @ t["w2"]) + self.bias
        return float(1.0 / (1.0 + np.exp(-z)))

    def to_safetensors_bytes(self) -> bytes:
        tensors = {**self.tensors, "truth": self.truth}
        if self.token_weight is not None:
            tensors["token_weight"] = self.token_weight
        if self.conformal_scores is not None and self.conformal_wrong is not None:
            tensors["conformal_scores"] = self.conformal_scores.astype(np.float32)
            tensors["conformal_wrong"] = self.conformal_wrong.astype(np.float32)
        meta = {"kind": KIND, "fingerprint": json.dumps(self.fingerprint.to_dict()),
                "layer": str(self.layer), "pooling": self.pooling,
                "probe_type": self.probe_type, "bias": repr(self.bias),
                "threshold": repr(self.threshold),
                "mitigate_layers": json.dumps(self.mitigate_layers),
                "token_layer": str(self.token_layer), "token_bias": repr(self.token_bias),
                "scores": json.dumps(self.scores), "created": self.created}
        return save_blob(tensors, meta)

    @classmethod
    def from_safetensors_bytes(cls, data: bytes) -> HallucinationProbe:
        tensors, meta = load_blob(data, KIND)
        try:
            arrays = {k: np.asarray(v, np.float32) for k, v in tensors.items()}
            truth = arrays.pop("truth")
            token_weight = arrays.pop("token_weight", None)
            conformal_scores = arrays.pop("conformal_scores", None)
            conformal_wrong = arrays.pop("conformal_wrong", None)
            return cls(layer=int(meta["layer"]), pooling=meta["pooling"],
                       probe_type=meta["probe_type"], tensors=arrays,
                       bias=float(meta["bias"]), threshold=float(meta["threshold"]),
                       truth=truth, mitigate_layers=json.loads(meta["mitigate_layers"]),
                       fingerprint=meta_fingerprint(meta),
                       token_layer=int(meta.get("token_layer", "-1")),
                       token_weight=token_weight, token_bias=float(meta.get("token_bias", 0)),
                       conformal_scores=conformal_scores, conformal_wrong=conformal_wrong,
                       scores=meta_json(meta, "scores", {}), created=meta.get("created", ""))
        except (KeyError, ValueError) as e:
            raise ArtifactError(f"bad probe artifact: {e}") from e
