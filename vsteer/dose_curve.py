"""Dosing a steering vector by effect, not by scale: `"kl": x` in a steer entry.

`vsteer vector calibrate` measures, for a grid of scales s, the mean next-token
KL(unsteered || steered) over a prompt set and how often the steered greedy text
repeats itself; the curve is stored in the vector artifact (provenance["dose"]).

Semantics (the server's `scale_for`):
    branch(x)   = the grid's scales with sign(x) (x > 0: s >= 0; x < 0: s <= 0), from 0
    env[i]      = max(kl[0..i]) along the branch (the curve made monotone)
    scale_for(x)= the scale at which env first reaches |x|, linearly interpolated
                  between its two neighbours; |x| above the branch's max KL -> an error
                  (the vector cannot move the model that far within the measured grid)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np


class DoseOutOfRange(ValueError):
    def __init__(self, kl: float, max_kl: float) -> None:
        super().__init__(f"kl {kl:g} is beyond what this vector reaches on its measured "
                         f"scales (at most {max_kl:.3g}); re-run `vsteer vector calibrate` "
                         "with larger --scales")
        self.max_kl = max_kl


@dataclass(frozen=True)
class DoseCurve:
    scales: list[float]  # ascending, includes 0
    kl: list[float]  # mean next-token KL(unsteered || steered) at each scale, nats
    repetition: list[float]  # share of repeated word 3-grams in steered greedy text
    prompts: int
    layers: list[int]
    gen_tokens: int

    def __post_init__(self) -> None:
        s = np.asarray(self.scales)
        if len(s) < 2 or 0.0 not in self.scales or np.any(np.diff(s) <= 0):
            raise ValueError("dose scales must be ascending, distinct and include 0")
        if not (len(self.kl) == len(self.repetition) == len(s)):
            raise ValueError("dose curve columns differ in length")
        if not np.all(np.isfinite(self.kl)) or min(self.kl) < -1e-6:
            raise ValueError("dose KL values must be finite and non-negative")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DoseCurve:
        return cls(**d)

    def _branch(self, sign: float) -> tuple[np.ndarray, np.ndarray]:
        s, k = np.asarray(self.scales, float), np.asarray(self.kl, float)
        keep = s >= 0 if sign > 0 else s <= 0
        s, k = s[keep], k[keep]
        order = np.argsort(np.abs(s))  # from 0 outwards
        return s[order], np.maximum.accumulate(np.maximum(k[order], 0.0))

    def max_kl(self, sign: float) -> float:
        return float(self._branch(sign)[1][-1])

    def scale_for(self, kl: float) -> float:
        if kl == 0:
            return 0.0
        s, env = self._branch(np.sign(kl))
        target = abs(kl)
        if target > env[-1]:
            raise DoseOutOfRange(kl, float(env[-1]))
        i = int(np.searchsorted(env, target, side="left"))  # env[i] >= target
        if i == 0 or env[i] == env[i - 1]:
            return float(s[i])
        frac = (target - env[i - 1]) / (env[i] - env[i - 1])
        return float(s[i - 1] + frac * (s[i] - s[i - 1]))
