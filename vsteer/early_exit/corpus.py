"""The token contexts exit predictors are trained on.

A corpus file is JSONL; each row is one of
    {"prompt": P}                          the model answers P (greedy, through vLLM)
    {"prompt": P, "completion": C}         C is teacher-forced after P's chat template
    {"prompt": P, "completion_token_ids": [...]}
    {"text": T}                            raw text, no chat template
Without a corpus file the model answers the prompt set shipped with vsteer
(`vsteer/data/exit_prompts.jsonl`), so the corpus is the model's own distribution.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from vsteer.chat import chat_text

DEFAULT_MAX_TOKENS = 96


@dataclass(frozen=True)
class Sequence:
    ids: list[int]  # the whole token sequence
    first: int  # positions first..len(ids)-2 each predict the next token


def shipped_prompts() -> list[dict[str, Any]]:
    text = resources.files("vsteer.data").joinpath("exit_prompts.jsonl").read_text()
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def read_corpus(path: Path) -> list[dict[str, Any]]:
    rows = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        row = json.loads(line)
        if not isinstance(row, dict) or not ("prompt" in row or "text" in row):
            raise ValueError(f"{path}:{n}: each row needs a 'prompt' or a 'text' field")
        rows.append(row)
    if not rows:
        raise ValueError(f"{path} has no rows")
    return rows


def answer_missing(model: str, rows: list[dict[str, Any]], max_tokens: int,
                   dtype: str = "float32") -> list[dict[str, Any]]:
    """Rows with only a prompt get the model's own greedy answer (vLLM engine)."""
    todo = [i for i, r in enumerate(rows) if "text" not in r
            and "completion" not in r and "completion_token_ids" not in r]
    if not todo:
        return rows
    from vsteer.eval_engine import EvalEngine

    out = [dict(r) for r in rows]
    with EvalEngine(model, Path("/nonexistent-artifacts"), dtype=dtype) as engine:
        answers = engine.answer([rows[i]["prompt"] for i in todo], None, max_tokens,
                                desc="corpus: model answers")
    for i, a in zip(todo, answers, strict=True):
        out[i]["completion"] = a.completion
        out[i]["completion_token_ids"] = a.token_ids
    return out


def to_sequences(tok: Any, rows: list[dict[str, Any]]) -> list[Sequence]:
    seqs = []
    for r in rows:
        if "text" in r:
            ids = tok(r["text"], add_special_tokens=False)["input_ids"]
            first = 0
        else:
            prompt = tok(chat_text(tok, r["prompt"]), add_special_tokens=False)["input_ids"]
            gen = r.get("completion_token_ids")
            if gen is None:
                gen = tok(r.get("completion", ""), add_special_tokens=False)["input_ids"]
            ids, first = prompt + list(gen), len(prompt) - 1
        if len(ids) - 1 > first:
            seqs.append(Sequence(list(ids), first))
    return seqs
