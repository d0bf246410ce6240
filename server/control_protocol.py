"""The `control` object clients send with a request (pydantic models; strict)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field


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


class ControlSpec(BaseModel):
    """`control` itself: every key is a control installed through the Control API
    (plugins/api.py: `steer`, `refusal`, `hallucination`, ... and any plugin), each
    validating its own part; a key no control takes is a 400 unknown_field."""

    model_config = ConfigDict(extra="forbid")
