"""Prompt sets: the shipped defaults (vsteer/data/refusal, see its README) and the
deterministic fit / held-out split used inside every training command."""

from __future__ import annotations

import json
from pathlib import Path

DATA = Path(__file__).resolve().parent.parent / "data" / "refusal"


def default_set(kind: str, split: str) -> Path:
    """kind: harmful | harmless; split: train | test."""
    return DATA / f"{kind}_{split}.jsonl"


def load_prompts(path: str | Path) -> list[str]:
    prompts = []
    for n, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as e:
            raise ValueError(f"{path}:{n}: not JSON: {e}") from None
        if not isinstance(row, dict) or not isinstance(row.get("prompt"), str):
            raise ValueError(f'{path}:{n}: each line needs {{"prompt": "..."}}')
        prompts.append(row["prompt"])
    if len(prompts) < 4:
        raise ValueError(f"{path}: need at least 4 prompts, found {len(prompts)}")
    return prompts


def split_fit_heldout(prompts: list[str], every: int = 4) -> tuple[list[str], list[str]]:
    """Every `every`-th prompt is held out (for layer choice and calibration); the
    rest fit the directions and the controller."""
    held = prompts[every - 1 :: every]
    fit = [p for i, p in enumerate(prompts) if i % every != every - 1]
    return fit, held
