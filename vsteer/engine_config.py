"""How vsteer configures a vLLM engine: the plugin's settings in `additional_config`.

They are part of vLLM's config hash, so compiled graphs cached with one vsteer
configuration are never reused by another (or by plain vLLM).
"""

from __future__ import annotations

from typing import Any

from vsteer import __version__
from vsteer.wire import MAX_STEER_ENTRIES

DEFAULT_STEER_SLOTS = 32


def vsteer_additional_config(max_steer_slots: int = DEFAULT_STEER_SLOTS,
                             capture: bool = False) -> dict[str, Any]:
    if max_steer_slots < 1:
        raise ValueError("max_steer_slots must be at least 1")
    return {"vsteer": {"version": __version__, "max_steer_slots": int(max_steer_slots),
                       "max_entries": MAX_STEER_ENTRIES, "capture": bool(capture)}}
