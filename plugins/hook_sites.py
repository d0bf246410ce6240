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
    # early exit can write a skipped layer's K/V (vllm_compat.fill_kv_from_stream):
    # Llama-style attention (qkv_proj, rotary_emb, attn) with no q/k norms
    kv_fill: bool = True


_LLAMA = HookSite("vllm.model_executor.models.llama", "LlamaDecoderLayer")

HOOK_SITES: dict[str, HookSite] = {
    "LlamaForCausalLM": _LLAMA,
    "MistralForCausalLM": _LLAMA,
    "Qwen2ForCausalLM": HookSite("vllm.model_executor.models.qwen2", "Qwen2DecoderLayer"),
    "Qwen3ForCausalLM": HookSite("vllm.model_executor.models.qwen3", "Qwen3DecoderLayer",
                                 kv_fill=False),  # q_norm / k_norm before rotary
}


def site_for(architecture: str) -> HookSite:
    try:
        return HOOK_SITES[architecture]
    except KeyError:
        raise ValueError(
            f"vsteer has no hook site for {architecture}; supported: {sorted(HOOK_SITES)}"
        ) from None
