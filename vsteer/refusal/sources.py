"""Refusal prompt *sources*: independent sets of harmful and/or harmless prompts, each
written or collected apart from the others (vsteer/data/refusal/sources/README.md).

Evaluation by source, not by split (issue 16): `vsteer eval refusal --by-source`
reports each source on its own, and `--loso` holds one source out at a time, refits
the guard on the rest and tests on the one left out.

A prompt file is JSONL (`{"prompt": ...}`) or plain text (one prompt a line).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from vsteer.refusal.data import DATA

SOURCES_DIR = DATA / "sources"


@dataclass(frozen=True)
class PromptSource:
    name: str
    harmful: list[str] = field(default_factory=list)
    harmless: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not (self.harmful or self.harmless):
            raise ValueError(f"source {self.name!r} has no prompts")


def read_prompt_file(path: Path) -> list[str]:
    lines = [ln.strip() for ln in path.read_text().splitlines() if ln.strip()]
    if path.suffix == ".jsonl":
        return [json.loads(ln)["prompt"] for ln in lines]
    return lines


def _files(stem: str) -> list[Path]:
    return [p for ext in (".jsonl", ".txt") if (p := SOURCES_DIR / f"{stem}{ext}").exists()]


def _read(stem: str) -> list[str]:
    return [p for f in _files(stem) for p in read_prompt_file(f)]


def shipped_sources(with_test_split: bool = True) -> dict[str, PromptSource]:
    """Every source shipped with vsteer, by name. `harmbench` is the one the first
    direction was built on (with vsteer's own harmless set): its train + test files,
    or its train files only (`with_test_split=False`, what calibration reads, so that
    `vsteer eval refusal` on the test files stays a held-out figure)."""
    splits = ("train", "test") if with_test_split else ("train",)
    out = {"harmbench": PromptSource(
        "harmbench",
        [p for s in splits for p in read_prompt_file(DATA / f"harmful_{s}.jsonl")],
        [p for s in splits for p in read_prompt_file(DATA / f"harmless_{s}.jsonl")])}
    stems = sorted({f.stem.rsplit("_", 1)[0] for f in SOURCES_DIR.glob("*_harm*.*")})
    for name in stems:
        out[name] = PromptSource(name, _read(f"{name}_harmful"), _read(f"{name}_harmless"))
    return out


def pick(sources: dict[str, PromptSource], names: list[str] | None
         ) -> dict[str, PromptSource]:
    if not names:
        return sources
    unknown = sorted(set(names) - set(sources))
    if unknown:
        raise SystemExit(f"unknown source(s) {unknown}; shipped: {sorted(sources)}")
    return {n: sources[n] for n in names}


def labelled_file(path: Path) -> PromptSource:
    """An operator's own traffic: JSONL of {"prompt": ..., "label": "harmful"|"harmless"},
    one source named after the file."""
    harmful: list[str] = []
    harmless: list[str] = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            label, prompt = row["label"], row["prompt"]
        except (ValueError, KeyError, TypeError):
            raise SystemExit(f'{path}:{n}: need {{"prompt": ..., "label": ...}}') from None
        if label not in ("harmful", "harmless") or not isinstance(prompt, str):
            raise SystemExit(f"{path}:{n}: label must be 'harmful' or 'harmless'")
        (harmful if label == "harmful" else harmless).append(prompt)
    if len(harmful) < 4 or len(harmless) < 4:
        raise SystemExit(f"{path}: need at least 4 harmful and 4 harmless prompts "
                         f"(found {len(harmful)} and {len(harmless)})")
    return PromptSource(path.stem, harmful, harmless)
