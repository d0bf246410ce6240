"""An in-process vLLM engine with the vsteer runtime, for offline tools (capture,
evaluation): the channel listener the worker reports to, the LLM, and its teardown."""

from __future__ import annotations

import os
from typing import Any

from vsteer.artifacts import ModelFingerprint
from vsteer.plugins.channel import ChannelListener, new_channel_address


class OfflineEngine:
    def __init__(self, model: str, additional_config: dict[str, Any],
                 hello_timeout: float = 120.0, **llm_kwargs: Any) -> None:
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
        remote = llm_kwargs.get("distributed_executor_backend") == "ray"
        self.listener = ChannelListener(new_channel_address(remote=remote))
        self.listener.export()  # inherited by the engine
        from vllm import LLM

        self.llm = LLM(model=model, enforce_eager=True, additional_config=additional_config,
                       **llm_kwargs)
        self.hello = self.listener.wait_ready(hello_timeout)
        self.fingerprint = ModelFingerprint.from_dict(self.hello["fingerprint"])

    def __enter__(self) -> OfflineEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        from vsteer.plugins import vllm_server_compat

        vllm_server_compat.shutdown_offline_engine(self.llm)
        self.listener.close()
