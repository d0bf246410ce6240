"""vLLM `general_plugins` entry point: runs in every vLLM process before models load.

It patches the hook-site classes and the model runner; the runtime itself is only
created at model load, and only when the engine was configured by vsteer
(`additional_config["vsteer"]`, which is also part of vLLM's compile-cache key).
Without it the patched classes behave exactly as vLLM's own.
"""

from __future__ import annotations

import logging

import torch

from vsteer.plugins import engine_support
from vsteer.plugins import vllm_compat as compat
from vsteer.plugins.channel import WorkerChannel
from vsteer.plugins.engine_support import EngineFeatures
from vsteer.plugins.hook_sites import HOOK_SITES, site_for

log = logging.getLogger("vsteer.plugin")
_RUNTIME = None  # ControlRuntime in a worker whose engine vsteer configured


def register() -> None:
    compat.check_vllm_version()
    compat.refuse_vsteer_on_v2_runners()
    for module, layer_class, call in {(s.module, s.layer_class, s.call)
                                      for s in HOOK_SITES.values()}:
        try:
            cls = compat.decoder_layer_class(module, layer_class)
        except (ImportError, AttributeError) as e:
            log.warning("vsteer: hook site %s.%s unavailable: %s", module, layer_class, e)
            continue
        compat.patch_decoder_layer(cls, _on_layer, call)
    compat.patch_model_runner(_on_loaded, _before_forward, _after_forward)


def runtime():
    return _RUNTIME


def _on_layer(layer: int, hidden: torch.Tensor, residual: torch.Tensor) -> None:
    rt = _RUNTIME
    if rt is not None:
        rt.on_layer(layer, hidden, residual)


def _on_loaded(runner) -> None:
    global _RUNTIME
    shape = compat.runner_shape(runner)
    if shape.vsteer_config is None:
        return
    engine_support.check(EngineFeatures.of_vllm_config(runner.vllm_config))
    site = site_for(shape.architecture)
    hooked = sum(1 for m in runner.get_model().modules()
                 if type(m).__name__ == site.layer_class and hasattr(m, "_vsteer_layer"))
    if hooked == 0:
        raise RuntimeError(f"vsteer found no {site.layer_class} layers to hook in the model")
    from vsteer.plugins.runtime import ControlRuntime

    _RUNTIME = ControlRuntime(shape, WorkerChannel())
    _RUNTIME.attach_model(runner.get_model(), site.layer_class, site.kv_fill)
    _RUNTIME.announce()
    log.info("vsteer runtime ready: %d layers hooked, %d slots, backend %s, %s mode",
             hooked, _RUNTIME.slots.num_slots, _RUNTIME.backend,
             "eager" if shape.eager else "compiled")


def _before_forward(runner, num_tokens: int) -> None:
    if _RUNTIME is not None:
        _RUNTIME.before_forward(runner, num_tokens)


def _after_forward(runner, num_tokens: int) -> None:
    if _RUNTIME is not None:
        _RUNTIME.after_forward(runner, num_tokens)
