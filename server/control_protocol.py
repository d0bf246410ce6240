"""The `control` object clients send with a request (pydantic models; strict)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from vsteer.wire import MAX_STEER_ENTRIES


class SteerEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    vector: str = Field(min_length=1, max_length=128)
    scale: float = 1.0
    # dose by effect: the scale whose next-token KL from the unsteered model is |kl|
    # (sign: the direction), from the vector's measured dose curve; not with `scale`
    kl: float | None = None
    layers: list[int] | None = Field(default=None, max_length=512)
    positions: Literal["all", "prompt", "generated"] = "all"
    op: Literal["add", "ablate", "add_normalized"] = "add"


class RefusalControl(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    mode: Literal["off", "guard", "force", "ablate", "controller"] = "guard"
    direction: str | None = Field(default=None, min_length=1, max_length=128)
    controller: str | None = Field(default=None, min_length=1, max_length=128)
    scale: float | None = None  # force / guard coefficient (default 1)
    threshold: float | None = None  # guard / controller (default: the calibrated one)
    layers: list[int] | None = Field(default=None, max_length=512)  # force only


class HallucinationControl(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    probe: str = Field(min_length=1, max_length=128)
    action: Literal["annotate", "abstain", "mitigate"] = "annotate"
    threshold: float | None = Field(default=None, ge=0.0, le=1.0)  # default: calibrated
    # abstain so that the error among answered questions stays near this (conformal)
    max_error: float | None = Field(default=None, gt=0.0, lt=1.0)
    per_token: bool = False
    scale: float | None = None  # mitigate: coefficient of the truth direction (default 1)


class EarlyExitControl(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    mode: Literal["off", "observe", "exit"] = "observe"
    predictor: str | None = Field(default=None, min_length=1, max_length=128)
    threshold: float | None = Field(default=None, ge=0.0, le=1.0)  # one, every layer
    target_agreement: float | None = Field(default=None, gt=0.0, le=1.0)  # calibrated


class ControlSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    steer: list[SteerEntry] = Field(default_factory=list, max_length=MAX_STEER_ENTRIES)
    refusal: RefusalControl | None = None
    hallucination: HallucinationControl | None = None
    early_exit: EarlyExitControl | None = None
