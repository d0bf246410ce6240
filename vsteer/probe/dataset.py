"""`vsteer probe dataset`: ask the model every question (greedy, chat template) and
label each answer correct or not (vsteer/probe/match.py).

Output rows (JSONL): question, answers, family, entity, split, prompt (the user
message sent), completion, completion_token_ids, correct.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from vsteer.chat import chat_text
from vsteer.probe.match import is_correct

INSTRUCTION = " Answer in a few words."
MAX_TOKENS = 24


def prompt_for(question: str) -> str:
    return question + INSTRUCTION


def load_questions(path: Path) -> list[dict[str, Any]]:
    """`{"question": ..., "answers": [...]}` lines (other keys kept); a line without
    `split` is treated as held-out ("test")."""
    rows = []
    with open(path) as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            row = json.loads(line)
            if not isinstance(row.get("question"), str) or not isinstance(row.get("answers"),
                                                                          list):
                raise ValueError(f"{path}:{n}: need a string `question` and a list `answers`")
            row.setdefault("split", "test")
            row.setdefault("family", "custom")
            row.setdefault("entity", row["question"])
            rows.append(row)
    return rows


def answer_questions(model: str, questions: list[dict[str, Any]], dtype: str = "float32",
                     max_tokens: int = MAX_TOKENS) -> list[dict[str, Any]]:
    """Greedy answers through the engine (no controls), labelled."""
    from vllm import SamplingParams

    from vsteer.engine_config import vsteer_additional_config
    from vsteer.offline_engine import OfflineEngine

    engine = OfflineEngine(model, vsteer_additional_config(), dtype=dtype, max_model_len=512)
    try:
        prompts = [prompt_for(q["question"]) for q in questions]
        tok = engine.llm.get_tokenizer()
        outs = engine.llm.generate([chat_text(tok, p) for p in prompts],
                                   SamplingParams(max_tokens=max_tokens, temperature=0.0),
                                   use_tqdm=True)
    finally:
        engine.close()
    rows = []
    for q, p, o in zip(questions, prompts, outs, strict=True):
        text = o.outputs[0].text
        rows.append({**q, "prompt": p, "completion": text,
                     "completion_token_ids": list(o.outputs[0].token_ids),
                     "correct": is_correct(text, q["answers"])})
    return rows


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]
