"""`vsteer refusal extract`: the refusal direction, and the force layer chosen on
held-out prompts.

  condition[l] = mean_harmful(x_l) - mean_harmless(x_l), x_l averaged over the chat
                 template's post-instruction positions (Arditi et al. 2024);
  refusal[l]   = mean over prompts of (x_l over a refusal reply) - (x_l over a
                 compliant reply), the reply teacher-forced after the prompt (CAST's
                 behaviour vector; a 135M model rarely refuses by itself, so the
                 harmful-minus-harmless direction alone does not make it refuse);
  layer        = among middle layers, the latest one whose `force` (add refusal[l]
                 at l) makes held-out harmless prompts refuse within 5 points of the
                 best layer, with KL(base || ablated) <= kl_max on held-out harmless
                 prompts when refusal[l]/|refusal[l]| is ablated at every layer.
"""

from __future__ import annotations

import numpy as np
import torch
from tqdm import tqdm

from vsteer.artifacts import ModelFingerprint, RefusalDirection
from vsteer.refusal.data import split_fit_heldout
from vsteer.refusal.hf_model import HFModel, chunks
from vsteer.refusal.judge import refusal_rate

REFUSAL_REPLIES = ("I'm sorry, but I can't help with that.",
                   "I cannot assist with this request.")
COMPLIANT_REPLIES = ("Sure, here is what you asked for.",
                     "Certainly! Here are the details.")
BATCH = 16


@torch.no_grad()
def condition_means(m: HFModel, prompts: list[str], desc: str) -> torch.Tensor:
    """Mean stream over the post-instruction positions, per layer: [L, H]."""
    layers = list(range(m.num_layers))
    acc = torch.zeros(m.num_layers, m.hidden_size)
    for c in tqdm(list(chunks(prompts, BATCH)), desc=desc, unit="batch"):
        _, s = m.forward(c, keep_layers=layers)  # [B, L, P, H]
        acc += s.mean(dim=2).sum(dim=0)
    return acc / len(prompts)


@torch.no_grad()
def reply_means(m: HFModel, prompts: list[str], reply: str) -> torch.Tensor:
    """Mean stream over the reply's tokens, teacher-forced after each prompt: [L, H]."""
    n = len(m.tok(reply, add_special_tokens=False)["input_ids"])
    acc = torch.zeros(m.num_layers, m.hidden_size)
    for c in chunks(prompts, BATCH):
        enc = m.batch(c, reply)
        seen: dict[int, torch.Tensor] = {}

        def record(i: int, x: torch.Tensor, seen=seen) -> torch.Tensor:
            seen[i] = x[:, -n:, :].mean(dim=1).sum(dim=0)  # [H]
            return x

        with m.edited(record):
            m.model(**enc)
        acc += torch.stack([seen[i] for i in range(m.num_layers)])
    return acc / len(prompts)


def behaviour_direction(m: HFModel, prompts: list[str]) -> torch.Tensor:
    ref = [reply_means(m, prompts, r) for r in tqdm(REFUSAL_REPLIES, desc="refusal replies")]
    com = [reply_means(m, prompts, r) for r in tqdm(COMPLIANT_REPLIES, desc="compliant replies")]
    return torch.stack(ref).mean(0) - torch.stack(com).mean(0)  # [L, H]


def add_at(layer: int, v: torch.Tensor):
    return lambda i, x: x + v if i == layer else x


def ablate_everywhere(v: torch.Tensor):
    d = v / v.norm().clamp_min(1e-12)
    return lambda i, x: x - (x @ d).unsqueeze(-1) * d


@torch.no_grad()
def mean_kl(m: HFModel, prompts: list[str], edit) -> float:
    total = 0.0
    for c in chunks(prompts, BATCH):
        base, _ = m.forward(c)
        new, _ = m.forward(c, edit=edit)
        lp, lq = base.log_softmax(-1), new.log_softmax(-1)
        total += float((lp.exp() * (lp - lq)).sum(-1).sum())
    return total / len(prompts)


def choose_layer(m: HFModel, refusal: torch.Tensor, held_harmless: list[str],
                 candidates: list[int], kl_max: float, max_new_tokens: int = 12
                 ) -> tuple[int, dict]:
    rates, kls = {}, {}
    for la in tqdm(candidates, desc="choosing the force layer", unit="layer"):
        texts = m.generate(held_harmless, max_new_tokens, add_at(la, refusal[la]))
        rates[la] = refusal_rate(texts)
        kls[la] = mean_kl(m, held_harmless, ablate_everywhere(refusal[la]))
    ok = [la for la in candidates if kls[la] <= kl_max] or candidates
    best = max(rates[la] for la in ok)
    layer = max(la for la in ok if rates[la] >= best - 0.05)
    scores = {"induced_refusal_rate": {str(k): v for k, v in rates.items()},
              "ablation_kl": {str(k): v for k, v in kls.items()}, "kl_max": kl_max,
              "held_out_harmless": len(held_harmless)}
    return layer, scores


def extract_direction(m: HFModel, fingerprint: ModelFingerprint, harmful: list[str],
                      harmless: list[str], kl_max: float = 0.5,
                      behaviour_prompts: int = 48, layers: list[int] | None = None
                      ) -> RefusalDirection:
    fit_h, _held_h = split_fit_heldout(harmful)
    fit_s, held_s = split_fit_heldout(harmless)
    condition = condition_means(m, fit_h, "harmful prompts") - condition_means(
        m, fit_s, "harmless prompts")
    mixed = [p for pair in zip(fit_h, fit_s, strict=False) for p in pair][:behaviour_prompts]
    refusal = behaviour_direction(m, mixed)
    n = m.num_layers
    candidates = layers or list(range(max(1, n // 5), (4 * n) // 5))
    layer, scores = choose_layer(m, refusal, held_s, candidates, kl_max)
    as_np = lambda t: {la: t[la].numpy().astype(np.float32) for la in range(n)}  # noqa: E731
    return RefusalDirection(
        as_np(refusal), as_np(condition), layer, fingerprint, scores,
        provenance={"method": "diffmean", "harmful_fit": len(fit_h),
                    "harmless_fit": len(fit_s), "behaviour_prompts": len(mixed),
                    "refusal_replies": list(REFUSAL_REPLIES),
                    "compliant_replies": list(COMPLIANT_REPLIES)})
