"""Hallucination probes inside the forward pass (control.hallucination; the control is
plugins/hallucination_control.py, its worker plugins/hallucination_worker.py).

Prefill, at the probe's layer, over the request's prompt tokens (x = hidden + residual):
    the pooled vector is the mean over the prompt (accumulated chunk by chunk when the
    scheduler splits it) or x at the last prompt token; it is scored once the prompt
    is complete (vsteer/artifacts/probe.py)
    fire = score >= threshold:
        abstain:  the sampler allows the request only its end-of-sequence token
                  (plugins/abstain.py), so nothing is generated
        mitigate: truth[l] * scale is written into the request's private slot at its
                  mitigate layers (all after the probe layer): it acts later in this
                  very forward pass and on every later token
Per token (per_token), at the token layer, on the row that samples the step's token:
    q = sigmoid(x[t] · token_weight + token_bias)
Linear probes and per-token scores are jobs of the device job table
(plugins/job_table.py): no read-back inside the forward pass. An MLP probe is scored
here, on the host, between two layers: it reads back, so it is eager-only on CUDA.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch

from vsteer.artifacts import HallucinationProbe, read_verified
from vsteer.kernels.jobs_reference import KIND_SIGMOID, POOL_LAST, POOL_MEAN
from vsteer.wire import WireProbe


@dataclass
class ProbeRun:
    wire: WireProbe
    probe: HallucinationProbe
    weight: dict[str, torch.Tensor]  # linear: weight [H]; mlp: w1, b1, w2, mu, sigma
    token_weight: torch.Tensor | None  # [H]
    weight_row: int = -1  # linear: the probe weight's row in the job table's weights
    token_row: int = -1  # per_token: the token weight's row there
    acc_row: int = -1  # linear, mean pooling: its accumulator row in the job table
    source_slot: int = -1  # mitigate: truth tensors
    target_slot: int = -1  # mitigate: this request's private slot
    prompt_tokens: int = 0
    told_unscored: bool = False  # its report says some token scores are missing
    job: int = -1  # this step's final prefill job row (abstain reads its fired flag)
    acc: torch.Tensor | None = None  # [H] fp32, MLP: running sum (mean) over earlier chunks
    acc_n: int = 0  # prompt tokens pooled so far (mean)
    done: bool = False
    score: float | None = None
    fired: bool = False

    @property
    def layer(self) -> int:
        return self.probe.layer

    @property
    def token_layer(self) -> int:
        return self.probe.token_layer


@functools.lru_cache(maxsize=16)
def _load_probe(path: str, sha256: str, device: str
                ) -> tuple[HallucinationProbe, dict[str, torch.Tensor], torch.Tensor | None]:
    """A probe's content is fixed by its hash: read, verify and parse it once, not once
    per request (requests only read these tensors)."""
    p = HallucinationProbe.from_safetensors_bytes(read_verified(path, sha256))
    weight = {k: torch.from_numpy(v).to(device) for k, v in p.tensors.items()}
    tw = torch.from_numpy(p.token_weight).to(device) if p.token_weight is not None else None
    return p, weight, tw


def load_probe_run(w: WireProbe, device: torch.device) -> ProbeRun:
    return ProbeRun(w, *_load_probe(w.path, w.sha256, str(device)))


def table_job(run: ProbeRun, a: int, b: int, final: bool, restart: bool = False
              ) -> tuple[dict | None, int]:
    """Linear probe: the job-table row (`JobTable.add` keywords) for prompt rows a..b of
    this step (None when last-token pooling needs nothing from this chunk), and the
    prompt tokens pooled once it has run. `restart`: the chunk starts at the prompt's
    first token (again, after a preemption's recompute). Pure: the caller stores it."""
    p = run.probe
    mean = p.pooling == "mean"
    before = 0 if restart else run.acc_n
    acc_n = before + (b - a) if mean else before
    if not (final or mean):
        return None, acc_n
    return dict(layer=p.layer, start=a if mean else b - 1, end=b, kind=KIND_SIGMOID,
                weight_row=run.weight_row, pool=POOL_MEAN if mean else POOL_LAST,
                bias=p.bias, threshold=run.wire.threshold, acc_row=run.acc_row,
                first=before == 0, final=final, count=max(acc_n, 1)), acc_n


def mlp_prefill(run: ProbeRun, hidden: torch.Tensor, residual: torch.Tensor | None,
                a: int, b: int, final: bool) -> bool:
    """MLP probe: feed prompt rows a..b of this step; score when `final`. Returns
    whether the probe was scored now."""
    p, t = run.probe, run.weight
    mean = p.pooling == "mean"
    if not (final or mean):
        return False  # last-token pooling: earlier chunks hold nothing it needs
    lo = a if mean else b - 1
    x = hidden[lo:b].float()  # [n, H] (n = 1 for last-token pooling)
    if residual is not None:
        x = x + residual[lo:b].float()
    if mean:
        part = x.sum(dim=0)
        run.acc = part if run.acc is None else run.acc + part
        run.acc_n += x.shape[0]
        if not final:
            return False
    v = run.acc / run.acc_n if mean else x[-1]  # [H]
    h = torch.relu(((v - t["mu"]) / t["sigma"]) @ t["w1"] + t["b1"])  # [M]
    run.score = float(torch.sigmoid(h @ t["w2"] + p.bias))
    run.done = True
    run.fired = run.score >= run.wire.threshold
    return True
