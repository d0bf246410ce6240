"""The model in transformers (fp32), for offline work that needs interventions or
gradients: layer choice, guard calibration, controller training.

Layer l is the residual stream *after* decoder layer l, as everywhere in vsteer (the
runtime's `hidden + residual` at that layer; checked against transformers in
tests/test_extraction.py). Interventions here are forward hooks on the decoder
layers' outputs, the same points where the runtime's `steer_apply` runs.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch

from vsteer.chat import chat_text

Edit = Callable[[int, torch.Tensor], torch.Tensor]  # (layer, stream [B, T, H]) -> stream


class HFModel:
    def __init__(self, model_dir: str, threads: int | None = None) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if threads:
            torch.set_num_threads(threads)
        self.tok = AutoTokenizer.from_pretrained(model_dir)
        self.tok.padding_side = "left"
        if self.tok.pad_token is None:
            self.tok.pad_token = self.tok.eos_token
        self.model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.layers = self.model.model.layers
        self.num_layers = len(self.layers)
        self.hidden_size = self.model.config.hidden_size
        self.post_instruction = self._post_instruction_count()

    def chat_text(self, prompt: str) -> str:
        return chat_text(self.tok, prompt)

    def _post_instruction_count(self) -> int:
        """Template tokens after the user's text (e.g. `<|im_end|>\\n<|im_start|>assistant\\n`)."""
        mark = "XQZJ"
        text = self.chat_text(mark)
        suffix = text[text.index(mark) + len(mark):]
        return len(self.tok(suffix, add_special_tokens=False)["input_ids"])

    def batch(self, prompts: list[str], reply: str = "") -> dict[str, torch.Tensor]:
        """Chat-templated prompts (each followed by `reply`, teacher-forced), left-padded."""
        texts = [self.chat_text(p) + reply for p in prompts]
        return self.tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)

    @contextlib.contextmanager
    def edited(self, edit: Edit | None) -> Iterator[None]:
        """Run forwards with `edit` applied to every decoder layer's output stream."""
        if edit is None:
            yield
            return
        handles = []
        for i, layer in enumerate(self.layers):
            def hook(_m, _inp, out, i=i):
                if isinstance(out, tuple):
                    return (edit(i, out[0]),) + tuple(out[1:])
                return edit(i, out)
            handles.append(layer.register_forward_hook(hook))
        try:
            yield
        finally:
            for h in handles:
                h.remove()

    def forward(self, prompts: list[str], edit: Edit | None = None,
                keep_layers: list[int] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Last-position logits [B, V] and streams [B, len(keep_layers), P, H] at the
        last P = post-instruction positions of the chat template."""
        keep = keep_layers if keep_layers is not None else []
        states: dict[int, torch.Tensor] = {}
        p = self.post_instruction

        def record(i: int, x: torch.Tensor) -> torch.Tensor:
            x = edit(i, x) if edit is not None else x
            if i in keep:
                states[i] = x[:, -p:, :]
            return x

        enc = self.batch(prompts)
        with self.edited(record):
            logits = self.model(**enc).logits[:, -1, :]  # [B, V]
        if keep:
            stacked = torch.stack([states[i] for i in keep], dim=1)  # [B, k, P, H]
        else:
            stacked = torch.empty(len(prompts), 0, p, self.hidden_size)
        return logits, stacked

    @torch.no_grad()
    def streams(self, seqs: list[list[int]]) -> dict[int, torch.Tensor]:
        """The stream after every layer, {layer: [B, T, H]}, for token sequences run
        right-padded (so positions stay 0..len-1; pad rows are garbage)."""
        width = max(map(len, seqs))
        ids = torch.full((len(seqs), width), self.tok.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for i, s in enumerate(seqs):
            ids[i, : len(s)] = torch.tensor(s)
            mask[i, : len(s)] = 1
        states: dict[int, torch.Tensor] = {}

        def record(i: int, x: torch.Tensor) -> torch.Tensor:
            states[i] = x
            return x

        with self.edited(record):
            self.model(input_ids=ids, attention_mask=mask)
        return states

    @torch.no_grad()
    def generate(self, prompts: list[str], max_new_tokens: int,
                 edit: Edit | None = None) -> list[str]:
        enc = self.batch(prompts)
        with self.edited(edit):
            out = self.model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                                      pad_token_id=self.tok.pad_token_id)
        return self.tok.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)


def chunks(items: list, n: int) -> Iterator[list]:
    for i in range(0, len(items), n):
        yield items[i:i + n]
