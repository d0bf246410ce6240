"""The one way vsteer's offline tools turn a user prompt into model input."""

from __future__ import annotations

from typing import Any


def chat_text(tok: Any, prompt: str) -> str:
    """`prompt` as a single user turn in the tokenizer's chat template, ready for the
    assistant's reply (the same text vLLM's chat endpoint builds)."""
    return tok.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                   add_generation_prompt=True)
