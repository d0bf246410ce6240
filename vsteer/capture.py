"""Offline hidden-state capture through the vsteer runtime inside a vLLM engine.

The engine runs eager with `capture` on; each prompt is prefilled once (max_tokens=1)
and the worker sends the residual stream after the requested layers at every prompt
token back over the channel.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import numpy as np
from tqdm import tqdm

from vsteer.engine_config import vsteer_additional_config
from vsteer.offline_engine import OfflineEngine
from vsteer.wire import EXTRA_ARGS_KEY, WireCapture, WireSpec, encode


class HiddenStateCapturer(OfflineEngine):
    def __init__(self, model: str, max_model_len: int = 1024, dtype: str = "bfloat16",
                 **engine_kwargs) -> None:
        super().__init__(model, vsteer_additional_config(capture=True), hello_timeout=60,
                         max_model_len=max_model_len, dtype=dtype,
                         enable_prefix_caching=False, **engine_kwargs)
        self.num_layers = self.fingerprint.num_layers
        self.hidden_size = self.fingerprint.hidden_size

    def capture(self, prompts: Sequence[str], layers: Sequence[int], batch_size: int = 32,
                desc: str = "capturing hidden states") -> list[np.ndarray]:
        """Per prompt, the residual stream after `layers`: [P_tokens, len(layers), H]."""
        from vllm import SamplingParams

        layers = [int(la) for la in layers]
        bad = [la for la in layers if not 0 <= la < self.num_layers]
        if bad:
            raise ValueError(f"layers {bad} out of range for a {self.num_layers}-layer model")
        out: list[np.ndarray] = []
        with tqdm(total=len(prompts), desc=desc, unit="prompt") as bar:
            for start in range(0, len(prompts), batch_size):
                chunk = list(prompts[start : start + batch_size])
                rids = [uuid.uuid4().hex for _ in chunk]
                params = [SamplingParams(max_tokens=1, temperature=0.0, extra_args={
                    EXTRA_ARGS_KEY: encode(WireSpec(rid=r, capture=WireCapture(layers)))})
                    for r in rids]
                self.llm.generate(chunk, params, use_tqdm=False)
                got = self.listener.wait_captures(rids, timeout=120)
                for r in rids:
                    msg = got[r]
                    out.append(np.frombuffer(msg["data"], np.float32).reshape(msg["shape"]))
                bar.update(len(chunk))
        return out
