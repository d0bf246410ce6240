"""`vsteer refusal calibrate`: refit the guard's condition vectors, and pick its layer
and threshold for a false-positive target, on pooled sources (guard_fit.py).

The sources are the shipped ones (vsteer/refusal/sources.py) and/or the operator's own
traffic (`--from FILE`); the artifact records which, with their sizes and a digest
(`calibration.scores.calibrated_on`). The force vector and force layer stay those of
`vsteer refusal extract`.
"""

from __future__ import annotations

import numpy as np
import torch
from tqdm import tqdm

from vsteer.artifacts import RefusalDirection
from vsteer.refusal.guard_fit import (
    LabelledStates,
    describe,
    fit_guard_direction,
    guard_score,
    label_sources,
    prompt_states,
)
from vsteer.refusal.hf_model import HFModel, chunks
from vsteer.refusal.sources import PromptSource


@torch.no_grad()
def last_token_states(m: HFModel, prompts: list[str], layers: list[int]) -> torch.Tensor:
    """Stream at the last prompt token: [N, len(layers), H]."""
    out = []
    for c in tqdm(list(chunks(prompts, 16)), desc="prompt states", unit="batch"):
        _, s = m.forward(c, keep_layers=layers)  # [B, k, P, H]
        out.append(s[:, :, -1, :])
    return torch.cat(out)


def calibrate_from_sources(m: HFModel, direction: RefusalDirection,
                           sources: list[PromptSource], max_fpr: float = 0.05,
                           rule: str = "worst-source", kind: str = "linear"
                           ) -> RefusalDirection:
    prompts, harmful, src, held = label_sources(sources)
    data = LabelledStates(prompt_states(m, prompts), harmful, src, held)
    return fit_guard_direction(data, direction, max_fpr, rule, describe(sources), kind,
                               m.post_instruction)


def offline_guard_scores(m: HFModel, d: RefusalDirection, prompts: list[str]) -> np.ndarray:
    """The guard's score for each prompt, from transformers (the runtime's twin)."""
    return guard_score(d, prompt_states(m, prompts))
