"""abstain decides on the device: a row is masked to its end token exactly where its
probe job's `fired` flag is set in the job table's output, with no read-back."""

from __future__ import annotations

import torch

from vsteer.plugins.abstain import _mask_where_fired


def test_rows_are_masked_where_their_job_fired_only():
    logits = torch.randn(4, 10)
    before = logits.clone()
    out = torch.tensor([[0.9, 1.0], [0.2, 0.0], [0.7, 1.0]])  # [J, (score, fired)]
    _mask_where_fired(logits, [(0, 3, 0), (2, 5, 1), (3, 7, 2)], out)
    assert logits[0].argmax() == 3 and torch.isinf(logits[0]).sum() == 9
    assert torch.equal(logits[2], before[2])  # its job did not fire
    assert logits[3].argmax() == 7 and torch.isinf(logits[3]).sum() == 9
    assert torch.equal(logits[1], before[1])  # no abstain request on this row
