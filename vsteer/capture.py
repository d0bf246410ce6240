"""Offline hidden-state capture through the vsteer runtime inside a vLLM engine.

The engine runs eager with `capture` on; each prompt is prefilled once (max_tokens=1)
and the worker sends the residual stream after the requested layers at every prompt
token back over the channel.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Sequence

import numpy as np
from tqdm import tqdm

from vsteer.engine_config import vsteer_additional_config
from vsteer.plugins.channel import ENV_ADDRESS, ChannelListener, new_channel_address
from vsteer.wire import EXTRA_ARGS_KEY, WireCapture, WireSpec, encode


class HiddenStateCapturer:
    def __init__(self, model: str, max_model_len: int = 1024, dtype: str = "bfloat16",
                 **engine_kwargs) -> None:
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
        self.listener = ChannelListener(new_channel_address())
        os.environ[ENV_ADDRESS] = self.listener.address
        from vllm import LLM

        self.llm = LLM(model=model, enforce_eager=True, max_model_len=max_model_len,
                       dtype=dtype, enable_prefix_caching=False,
                       additional_config=vsteer_additional_config(capture=True),
                       **engine_kwargs)
        hello = self.listener.wait_ready(60)
        self.num_layers = int(hello["fingerprint"]["num_layers"])
        self.hidden_size = int(hello["fingerprint"]["hidden_size"])
        self.fingerprint = hello["fingerprint"]

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

    def close(self) -> None:
        from vsteer.plugins import vllm_compat

        vllm_compat.shutdown_offline_engine(self.llm)
        self.listener.close()
