"""How vsteer configures a vLLM engine: the plugin's settings in `additional_config`.

They are part of vLLM's config hash, so compiled graphs cached with one vsteer
configuration are never reused by another (or by plain vLLM).
"""

from __future__ import annotations

import hashlib
from functools import cache
from pathlib import Path
from typing import Any

from vsteer import __version__
from vsteer.wire import MAX_STEER_ENTRIES

DEFAULT_STEER_SLOTS = 32


@cache
def runtime_code_hash() -> str:
    """Hash of the code that ends up inside compiled graphs (plugin + kernels): a change
    to it must never reuse a graph compiled with the old code."""
    import vsteer.kernels
    import vsteer.plugins

    h = hashlib.sha256()
    for pkg in (vsteer.plugins, vsteer.kernels):
        for f in sorted(Path(pkg.__file__).parent.glob("*.py")):
            h.update(f.name.encode() + f.read_bytes())
    return h.hexdigest()[:16]


def vsteer_additional_config(max_steer_slots: int = DEFAULT_STEER_SLOTS,
                             capture: bool = False,
                             max_private_slots: int | None = None) -> dict[str, Any]:
    """The engine's `additional_config`. Whoever asks for it is about to build a vsteer
    engine, so this also selects vLLM's V1 model runner in this process (inherited by
    the engine's processes; plain vLLM elsewhere keeps its own default)."""
    from vsteer.plugins.vllm_compat import select_v1_model_runner

    select_v1_model_runner()
    if max_steer_slots < 1:
        raise ValueError("max_steer_slots must be at least 1")
    if max_private_slots is not None and max_private_slots < 0:
        raise ValueError("max_private_slots must be at least 0")
    return {"vsteer": {"version": __version__, "code": runtime_code_hash(),
                       "max_steer_slots": int(max_steer_slots),
                       "max_entries": MAX_STEER_ENTRIES, "capture": bool(capture),
                       # None: one per sequence the engine runs (its max_num_seqs)
                       "max_private_slots": max_private_slots}}
