"""Controls installed as plugins: every entry point in the group `vsteer.controls`
(plugins/api.py), loaded once per process. A control that fails to load, or whose
name is taken, stops the server (or the worker) with its entry point named: serving
without a control the operator installed would break every request that names it."""

from __future__ import annotations

import functools
from importlib.metadata import entry_points

from vsteer.plugins.api import ENTRY_POINT_GROUP, Control


@functools.cache
def installed_controls() -> dict[str, Control]:
    out: dict[str, Control] = {}
    for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        try:
            control = ep.load()()
        except Exception as e:
            raise RuntimeError(f"vsteer control {ep.name!r} ({ep.value}) failed to load: "
                               f"{type(e).__name__}: {e}") from e
        if not isinstance(control, Control):
            raise RuntimeError(f"vsteer control {ep.name!r} ({ep.value}) returned "
                               f"{type(control).__name__}, not a vsteer.plugins.api.Control")
        if control.name in out:
            raise RuntimeError(f"vsteer control {ep.name!r} ({ep.value}) takes the name "
                               f"{control.name!r}, which is already in use")
        out[control.name] = control
    return out
