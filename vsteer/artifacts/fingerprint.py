"""What identifies the model an artifact was made for."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class ModelFingerprint:
    architecture: str  # e.g. "LlamaForCausalLM"
    hidden_size: int
    num_layers: int

    @classmethod
    def from_hf_config(cls, config: Any) -> ModelFingerprint:
        archs = getattr(config, "architectures", None) or [type(config).__name__]
        text = getattr(config, "text_config", None) or config
        return cls(str(archs[0]), int(text.hidden_size), int(text.num_hidden_layers))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelFingerprint:
        return cls(str(d["architecture"]), int(d["hidden_size"]), int(d["num_layers"]))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def mismatch(self, other: ModelFingerprint) -> str | None:
        """A human-readable reason why `self` (artifact) does not fit `other` (model)."""
        if self == other:
            return None
        return (
            f"made for {self.architecture} (hidden {self.hidden_size}, {self.num_layers} "
            f"layers), served model is {other.architecture} (hidden {other.hidden_size}, "
            f"{other.num_layers} layers)"
        )
