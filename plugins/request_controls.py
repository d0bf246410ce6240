"""A request's controls as the worker holds them: parsed once, slots resolved once."""

from __future__ import annotations

from dataclasses import dataclass, field

from vsteer.kernels.steer_reference import OP_CODES
from vsteer.plugins.position_window import Segment, Span, segments, span
from vsteer.wire import WireSpec

Entry = tuple[int, float, int]  # (slot, scale, op code)


@dataclass
class RequestControls:
    spec: WireSpec
    num_prompt_tokens: int
    choice: int = 0  # which of the reply's `n` choices this engine request is
    keys: list[str] = field(default_factory=list)  # slot keys this request pins
    spans: list[tuple[Entry, Span]] = field(default_factory=list)  # per steering entry
    # positions -> entries, one token-plan row each (allocated when first needed)
    segments: list[Segment] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # what could not be set up here
    plugins: dict[str, object] = field(default_factory=dict)  # control -> its state

    def add_entry(self, key: str, slot: int, scale: float, op: str, positions: str,
                  window: tuple[int, int | None] | None = None) -> None:
        """Steer with `slot` on `positions` (plugins/position_window.py)."""
        self.keys.append(key)
        self.spans.append(((slot, scale, OP_CODES[op]),
                           span(positions, window, self.num_prompt_tokens)))
        self.segments = segments(self.spans)
