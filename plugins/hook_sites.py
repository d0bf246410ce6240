"""Declarative table of where controls hook into each supported architecture.

A hook site is a decoder-layer class and the shape of its forward (`call`):
    "pair"               forward(positions, hidden_states, residual) -> (hidden, residual)
    "pair_hidden_first"  forward(hidden_states, positions, residual) -> (hidden, residual)
                         (GPT-OSS's TransformerBlock)
    "stream"             forward(positions, hidden_states) -> hidden_states, the whole
                         stream (Granite: residual multipliers inside the layer)
The residual stream after the layer is `hidden + residual` (a "stream" layer: hidden,
residual None). Controls run on it right after the layer.
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
    call: str = "pair"  # the forward's shape (above)


_LLAMA = HookSite("vllm.model_executor.models.llama", "LlamaDecoderLayer")
_MODELS = "vllm.model_executor.models."


def _site(module: str, layer_class: str, call: str = "pair") -> HookSite:
    """A family whose K/V fill is not verified (q/k norms before rotary, MLA, another
    layer shape, or simply untested): early exit cannot skip its layers."""
    return HookSite(_MODELS + module, layer_class, kv_fill=False, call=call)


HOOK_SITES: dict[str, HookSite] = {
    "LlamaForCausalLM": _LLAMA,
    "MistralForCausalLM": _LLAMA,
    "Phi3ForCausalLM": _LLAMA,  # vLLM's Phi3 is a LlamaForCausalLM subclass
    "Qwen2ForCausalLM": HookSite(_MODELS + "qwen2", "Qwen2DecoderLayer"),
    "Qwen3ForCausalLM": _site("qwen3", "Qwen3DecoderLayer"),  # q_norm / k_norm
    "Gemma2ForCausalLM": _site("gemma2", "Gemma2DecoderLayer"),
    "Gemma3ForCausalLM": _site("gemma3", "Gemma3DecoderLayer"),  # q_norm / k_norm
    "MixtralForCausalLM": _site("mixtral", "MixtralDecoderLayer"),
    "Qwen2MoeForCausalLM": _site("qwen2_moe", "Qwen2MoeDecoderLayer"),
    "Qwen3MoeForCausalLM": _site("qwen3_moe", "Qwen3MoeDecoderLayer"),
    # DeepSeek V2 / V3: MLA attention; in fp16 vLLM scales the stream by
    # 1 / routed_scaling_factor inside the layer (vectors then act on the scaled stream)
    "DeepseekV2ForCausalLM": _site("deepseek_v2", "DeepseekV2DecoderLayer"),
    "DeepseekV3ForCausalLM": _site("deepseek_v2", "DeepseekV2DecoderLayer"),
    "GptOssForCausalLM": _site("gpt_oss", "TransformerBlock", "pair_hidden_first"),
    "GraniteForCausalLM": _site("granite", "GraniteDecoderLayer", "stream"),
}


def site_for(architecture: str) -> HookSite:
    try:
        return HOOK_SITES[architecture]
    except KeyError:
        raise ValueError(
            f"vsteer has no hook site for {architecture}; supported: {sorted(HOOK_SITES)}"
        ) from None
