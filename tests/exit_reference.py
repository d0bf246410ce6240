"""The documented early-exit semantics, rebuilt in transformers (fp32), one token at a
time: the reference the engine's K/V cache is checked against.

Decode step for the token at position p that exits after layer e:
    layers 0..e run normally (reading and extending the cache)
    every later layer l only appends K/V computed from x_e:
        n = input_layernorm_l(x_e); k = rope(k_proj_l(n), p); v = v_proj_l(n)
    the next token's logits = lm_head(norm(x_e))
`kv_from="full"` is the negative control: the skipped layers' K/V come from running
them at full depth (the exit still decides the logits), i.e. a cache that was not
filled the documented way.
"""

from __future__ import annotations

import torch


class ExitReplay:
    def __init__(self, model_dir: str) -> None:
        from transformers import AutoModelForCausalLM

        self.m = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
        self.inner = self.m.model
        self.layers = self.inner.layers

    @torch.no_grad()
    def logprobs(self, prompt_ids: list[int], gen_ids: list[int], exit_layers: list[int],
                 kv_from: str = "exit") -> list[float]:
        """Log-probability of each generated token; exit_layers[t] is the layer the step
        that sampled token t exited after (L - 1: no exit)."""
        from transformers import DynamicCache

        cache = DynamicCache(config=self.m.config)
        ids = torch.tensor([prompt_ids])
        out = self.m(input_ids=ids, past_key_values=cache, use_cache=True)
        logp = [torch.log_softmax(out.logits[0, -1], -1)[gen_ids[0]].item()]
        pos = len(prompt_ids)
        for t in range(1, len(gen_ids)):
            x = self._step(gen_ids[t - 1], pos, exit_layers[t], cache, kv_from)
            logits = self.m.lm_head(self.inner.norm(x))[0, -1]
            logp.append(torch.log_softmax(logits, -1)[gen_ids[t]].item())
            pos += 1
        return logp

    def _step(self, token: int, pos: int, exit_after: int, cache, kv_from: str
              ) -> torch.Tensor:
        from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

        position_ids = torch.tensor([[pos]])
        h = self.inner.embed_tokens(torch.tensor([[token]]))  # [1, 1, H]
        pe = self.inner.rotary_emb(h, position_ids)
        exit_state = None
        for la, layer in enumerate(self.layers):
            if la <= exit_after or kv_from == "full":
                h = layer(h, attention_mask=None, position_ids=position_ids,
                          past_key_values=cache, use_cache=True, position_embeddings=pe)
                if isinstance(h, tuple):
                    h = h[0]
                if la == exit_after:
                    exit_state = h
                continue
            a = layer.self_attn
            n = layer.input_layernorm(exit_state)
            shape = (1, 1, -1, a.head_dim)
            k = a.k_proj(n).view(shape).transpose(1, 2)  # [1, kv_heads, 1, D]
            v = a.v_proj(n).view(shape).transpose(1, 2)
            _, k = apply_rotary_pos_emb(k, k, *pe)
            cache.update(k, v, la)
        return exit_state if exit_state is not None else h
