"""Declarative table of where controls hook into each supported architecture.

A hook site is a decoder-layer class whose `forward(positions, hidden_states,
residual)` returns `(hidden, residual)`; the residual stream after the layer is
`hidden + residual`. Controls run on that pair right after the layer.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class HookSite:
    module: str  # vLLM module defining the decoder layer
    layer_class: str
    layers_attr: str = "model.layers"  # where the layer list lives on the causal-LM model


_LLAMA = HookSite("vllm.model_executor.models.llama", "LlamaDecoderLayer")

HOOK_SITES: dict[str, HookSite] = {
    "LlamaForCausalLM": _LLAMA,
    "MistralForCausalLM": _LLAMA,
    "Qwen2ForCausalLM": HookSite("vllm.model_executor.models.qwen2", "Qwen2DecoderLayer"),
    "Qwen3ForCausalLM": HookSite("vllm.model_executor.models.qwen3", "Qwen3DecoderLayer"),
}


def site_for(architecture: str) -> HookSite:
    try:
        return HOOK_SITES[architecture]
    except KeyError:
        raise ValueError(
            f"vsteer has no hook site for {architecture}; supported: {sorted(HOOK_SITES)}"
        ) from None
