"""The tuned lens (vsteer/early_exit/tuned_lens.py) on the real small model: it starts
as the logit lens and its fit lowers KL to the full model on the tokens it is fit on,
and on held-out tokens of the same text."""

from __future__ import annotations

import numpy as np
import torch

from vsteer.early_exit.corpus import Sequence
from vsteer.early_exit.tuned_lens import collect, fit_layer, lens_logits, read

TEXT = ("The river runs through the old town, past the market and the bridge, "
        "where people meet in the morning to buy bread, fish and flowers. ") * 6


def _kl(m, x, full_logp, a, b):
    with torch.no_grad():
        q = lens_logits(m, x, a, b).log_softmax(-1)
        p = full_logp.float()
        return float((p.exp() * (p - q)).sum(-1).mean())


def test_tuned_lens_starts_as_the_logit_lens_and_fits_toward_the_full_model(model_dir):
    from vsteer.refusal.hf_model import HFModel

    m = HFModel(str(model_dir))
    ids = m.tok(TEXT, add_special_tokens=False)["input_ids"]
    data = collect(m, [Sequence(ids, 0)], [20])
    x, logp = data.x[20], data.full_logp
    n = len(x)
    fit, held = np.arange(n) < (2 * n) // 3, np.arange(n) >= (2 * n) // 3
    zero_a, zero_b = torch.zeros(x.shape[1], x.shape[1]), torch.zeros(x.shape[1])
    tok0, _ = read(m, x, zero_a, zero_b)
    lens_tok, _ = read(m, x, None, None)
    assert torch.equal(tok0, lens_tok)  # zero map == the logit lens
    a, b = fit_layer(m, x[fit], logp[fit], steps=60)
    assert _kl(m, x[fit], logp[fit], a, b) < 0.7 * _kl(m, x[fit], logp[fit], None, None)
    assert _kl(m, x[held], logp[held], a, b) < _kl(m, x[held], logp[held], None, None)
    assert data.full_tok.shape == (n,) and set(data.seq.tolist()) == {0}
