"""The `control` object clients send with a request (pydantic models; strict)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from vsteer.server.mode_schema import ModeFields, f


class PositionWindow(BaseModel):
    """Tokens [a, b) of the prompt or of the reply: `{"prompt": [0, 4]}`, `{"prompt":
    [-3, null]}` (the last three prompt tokens), `{"generated": [2, 10]}`."""

    model_config = ConfigDict(extra="forbid")

    prompt: tuple[int, int | None] | None = None
    generated: tuple[int, int | None] | None = None


def _check_positions(v: Any) -> Any:
    """Clear messages for the shapes pydantic's union would report as a list of misses."""
    if isinstance(v, PositionWindow):
        return v
    if isinstance(v, str):
        if v not in NAMED_POSITIONS:
            raise ValueError(f"positions must be one of {', '.join(NAMED_POSITIONS)} or a "
                             "window such as {\"prompt\": [0, 4]}")
        return v
    if not isinstance(v, dict) or len(v) != 1 or next(iter(v)) not in ("prompt",
                                                                       "generated"):
        raise ValueError('a window is {"prompt": [a, b]} or {"generated": [a, b]}')
    part, bounds = next(iter(v.items()))
    if (not isinstance(bounds, list | tuple) or len(bounds) != 2
            or type(bounds[0]) is not int
            or not (bounds[1] is None or type(bounds[1]) is int)):
        raise ValueError(f"{part}: [a, b] with integers a and b (b null: to the end)")
    a, b = bounds
    if part == "generated" and (a < 0 or (b is not None and b < 0)):
        raise ValueError("generated windows count from the first generated token (0); "
                         "a reply's end is not known while it is generated")
    if b is not None and (a < 0) == (b < 0) and b <= a:
        raise ValueError(f"{part} window [{a}, {b}) is empty")
    return v


NAMED_POSITIONS = ("all", "prompt", "generated", "last")
Positions = Annotated[Literal["all", "prompt", "generated", "last"] | PositionWindow,
                      BeforeValidator(_check_positions)]


class SteerEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    vector: str = Field(min_length=1, max_length=128)
    scale: float = 1.0
    # dose by effect: the scale whose next-token KL from the unsteered model is |kl|
    # (sign: the direction), from the vector's measured dose curve; not with `scale`
    kl: float | None = None
    layers: list[int] | None = Field(default=None, max_length=512)
    # all | prompt | generated | last (the last prompt token) | a window of tokens
    positions: Positions = "all"
    op: Literal["add", "ablate", "add_normalized"] = "add"

    def wire_positions(self) -> tuple[str, tuple[int, int | None] | None]:
        return wire_positions(self.positions)

    def positions_json(self) -> str | dict[str, list[int | None]]:
        return positions_json(self.positions)


def wire_positions(positions: str | PositionWindow
                   ) -> tuple[str, tuple[int, int | None] | None]:
    """(positions, window) as the worker reads them (vsteer.wire.WireSteer)."""
    if isinstance(positions, str):
        return positions, None
    if positions.prompt is not None:
        return "prompt", positions.prompt
    return "generated", positions.generated


def positions_json(positions: str | PositionWindow) -> str | dict[str, list[int | None]]:
    """Positions as the request named them (echoed in `control`)."""
    if isinstance(positions, str):
        return positions
    return positions.model_dump(exclude_none=True, mode="json")


class RefusalControl(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    mode: Literal["off", "guard", "force", "ablate", "controller"] = "guard"
    direction: str | None = Field(default=None, min_length=1, max_length=128)
    controller: str | None = Field(default=None, min_length=1, max_length=128)
    scale: float | None = None  # force / guard coefficient (default 1)
    threshold: float | None = None  # guard / controller (default: the calibrated one)
    layers: list[int] | None = Field(default=None, max_length=512)  # force only


# The fields each mode reads (server/mode_schema.py): any other is a 400, and the OpenAPI
# spec shows one closed variant per mode.
REFUSAL_MODES = ModeFields("mode", "guard", {
    "off": f(), "guard": f("direction", "scale", "threshold"),
    "force": f("direction", "scale", "layers"), "ablate": f("direction"),
    "controller": f("controller", "direction", "threshold")})


class HallucinationControl(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    probe: str = Field(min_length=1, max_length=128)
    action: Literal["annotate", "abstain", "mitigate"] = "annotate"
    threshold: float | None = Field(default=None, ge=0.0, le=1.0)  # default: calibrated
    # abstain so that the error among answered questions stays near this (conformal)
    max_error: float | None = Field(default=None, gt=0.0, lt=1.0)
    per_token: bool = False
    scale: float | None = None  # mitigate: coefficient of the truth direction (default 1)


HALLUCINATION_ACTIONS = ModeFields("action", "annotate", {
    "annotate": f(), "abstain": f("max_error"), "mitigate": f("scale")},
    always=f("probe", "threshold", "per_token"))


# control.<key> -> its mode table (the OpenAPI spec's discriminated variants); an
# installed control with modes gives its own table (Control.modes)
MODE_TABLES = {"refusal": REFUSAL_MODES, "hallucination": HALLUCINATION_ACTIONS}


class ControlSpec(BaseModel):
    """The built-ins not (yet) on the Control API; `steer` and every other key are
    installed controls (plugins/api.py), each validating its own part."""

    model_config = ConfigDict(extra="forbid")

    refusal: RefusalControl | None = None
    hallucination: HallucinationControl | None = None
