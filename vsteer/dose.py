"""`vsteer vector calibrate`: measure a vector's dose curve (vsteer/dose_curve.py) in
transformers (fp32), with the runtime's `add` semantics (h += s·v[l] at each of the
vector's layers, every position).

    kl(s)         = mean over prompts of KL(p_0 || p_s) at the next token after the
                    chat-templated prompt, p_s = the model's distribution steered at s
    repetition(s) = mean over prompts of the share of word 3-grams in the greedy
                    continuation (gen_tokens tokens, steered at s) that already occurred
                    earlier in it (0: no loop; near 1: a loop)
"""

from __future__ import annotations

import re

import torch
from tqdm import tqdm

from vsteer.artifacts import SteeringVector
from vsteer.dose_curve import DoseCurve
from vsteer.refusal.hf_model import HFModel, chunks

DEFAULT_SCALES = (-8.0, -4.0, -2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0, 4.0, 8.0)
BATCH = 16
_WORD = re.compile(r"\w+")


def repetition_rate(text: str, n: int = 3) -> float:
    words = _WORD.findall(text.lower())
    grams = [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]
    if not grams:
        return 0.0
    seen: set[tuple[str, ...]] = set()
    repeats = 0
    for g in grams:
        repeats += g in seen
        seen.add(g)
    return repeats / len(grams)


def _edit(vector: SteeringVector, scale: float):
    adds = {la: torch.from_numpy(d) * scale for la, d in vector.directions.items()}
    return lambda i, x: x + adds[i] if i in adds else x


@torch.no_grad()
def measure_dose(m: HFModel, vector: SteeringVector, prompts: list[str],
                 scales: tuple[float, ...] = DEFAULT_SCALES, gen_tokens: int = 32
                 ) -> DoseCurve:
    scales = tuple(sorted(set(scales) | {0.0}))
    base = torch.cat([m.forward(c)[0].log_softmax(-1) for c in chunks(prompts, BATCH)])
    kls, reps = [], []
    for s in tqdm(scales, desc="dose curve", unit="scale"):
        edit = _edit(vector, s)
        steered = torch.cat([m.forward(c, edit=edit)[0].log_softmax(-1)
                             for c in chunks(prompts, BATCH)])
        kls.append(float((base.exp() * (base - steered)).sum(-1).mean()))
        texts = [t for c in chunks(prompts, BATCH) for t in m.generate(c, gen_tokens, edit)]
        reps.append(sum(map(repetition_rate, texts)) / len(texts))
    return DoseCurve(list(scales), kls, reps, len(prompts), vector.layers, gen_tokens)
