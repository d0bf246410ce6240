"""Where vsteer keeps its caches."""

from __future__ import annotations

import os
from pathlib import Path


def vsteer_home() -> Path:
    """`$VSTEER_HOME`, default `~/.cache/vsteer`; created on first use."""
    home = Path(os.environ.get("VSTEER_HOME", Path.home() / ".cache" / "vsteer"))
    home.mkdir(parents=True, exist_ok=True)
    return home
