"""The engine offline evaluations run on: vLLM + the vsteer runtime, with every
request's `control` resolved exactly as the server resolves it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from vsteer.chat import chat_text
from vsteer.engine_config import vsteer_additional_config
from vsteer.offline_engine import OfflineEngine

BATCH = 32


@dataclass
class Answer:
    prompt: str
    completion: str
    token_ids: list[int]
    rid: str  # the control's correlation id (results arrive on the listener under it)
    finish_reason: str | None
    errors: list[str] = field(default_factory=list)  # only with answer(..., errors="keep")
    # answer(..., reports=True): the response's `control` object, built as the server
    # builds it (server/control_report.py), e.g. control["refusal"]["triggered"]
    control: dict[str, Any] = field(default_factory=dict)


class EvalEngine(OfflineEngine):
    def __init__(self, model: str, artifacts: Path, dtype: str = "float32",
                 max_model_len: int = 1024, max_abs_scale: float = 64.0,
                 **llm_kwargs: Any) -> None:
        from vsteer.artifacts import ArtifactStore
        from vsteer.server.control_resolver import ControlResolver

        # every request of a batch may hold a private decision slot, plus shared ones
        super().__init__(model, vsteer_additional_config(max_steer_slots=BATCH + 8),
                         max_model_len=max_model_len, dtype=dtype, **llm_kwargs)
        self.resolver = ControlResolver(ArtifactStore(artifacts), self.fingerprint,
                                        max_abs_scale=max_abs_scale,
                                        worker_info=self.hello.get("controls"))
        self.tok = self.llm.get_tokenizer()

    def answer(self, prompts: list[str], control: dict[str, Any] | None, max_tokens: int,
               desc: str, batch: int = BATCH, errors: str = "raise", reports: bool = False
               ) -> list[Answer]:
        """Greedy chat answers, `batch` prompts per engine call; raises if the worker
        reports a control it could not apply (errors="keep": returns them instead).
        `reports`: each answer carries its `control` report (then its results have left
        the listener's book)."""
        import asyncio

        from vllm import SamplingParams

        from vsteer.server.control_report import ControlReporter
        from vsteer.wire import EXTRA_ARGS_KEY

        reporter = ControlReporter(self.listener.book, self.resolver.controls)

        out: list[Answer] = []
        for start in tqdm(range(0, len(prompts), batch), desc=desc, unit="batch"):
            chunk = prompts[start:start + batch]
            resolved = [self.resolver.resolve(control or {}) for _ in chunk]
            params = [SamplingParams(max_tokens=max_tokens, temperature=0.0,
                                     extra_args={EXTRA_ARGS_KEY: r.encoded()} if r.active
                                     else None) for r in resolved]
            texts = [chat_text(self.tok, p) for p in chunk]
            outs = self.llm.generate(texts, params, use_tqdm=False)
            for p, r, o in zip(chunk, resolved, outs, strict=True):
                c = o.outputs[0]
                report: dict[str, Any] = {}
                if reports:
                    report = asyncio.run(reporter.final(r, len(c.token_ids)))
                    failed = [e["message"] for e in report.get("errors", [])]
                else:
                    failed = self.listener.pop_errors(r.wire.rid)
                if failed and errors == "raise":
                    raise RuntimeError(f"control not applied: {failed}")
                out.append(Answer(p, c.text, list(c.token_ids), r.wire.rid, c.finish_reason,
                                  failed, report))
        return out
