"""Hallucination probes inside the forward pass (control.hallucination).

Prefill, at the probe's layer, over the request's prompt tokens (x = hidden + residual):
    linear probe, whole prompt in this step:  torch.ops.vsteer.probe_score on its rows
    otherwise (prompt split over steps, or an MLP probe): the pooled vector is
        accumulated chunk by chunk (mean) or taken at the last prompt token (last), and
        scored once the prompt is complete (vsteer/artifacts/probe.py)
    fire = score >= threshold:
        abstain:  the request's id joins `abstained`; the sampler then allows only its
                  end-of-sequence token (plugins/abstain.py), so nothing is generated
        mitigate: truth[l] * scale is written into the request's private slot at its
                  mitigate layers (all after the probe layer): it acts later in this
                  very forward pass and on every later token
Per token (per_token), at the token layer, on the row that samples the step's token:
    q = probe_score(x[t], token_weight, token_bias)   (PER_TOKEN)
Both read a score back to the host: like the refusal decisions, this runs in Python
between two layers and is not CUDA-graph safe.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch

from vsteer.artifacts import HallucinationProbe, read_verified
from vsteer.kernels.probe_reference import PER_TOKEN, POOL_LAST, POOL_MEAN
from vsteer.wire import WireProbe


@dataclass
class ProbeRun:
    wire: WireProbe
    probe: HallucinationProbe
    weight: dict[str, torch.Tensor]  # linear: weight [H]; mlp: w1, b1, w2, mu, sigma
    token_weight: torch.Tensor | None  # [H]
    source_slot: int = -1  # mitigate: truth tensors
    target_slot: int = -1  # mitigate: this request's private slot
    acc: torch.Tensor | None = None  # [H] fp32, running sum (mean) over earlier chunks
    acc_n: int = 0
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


class ProbeScorer:
    """Preallocated buffers for the probe op, shared by every request of a worker."""

    def __init__(self, device: torch.device) -> None:
        self.cu = torch.zeros(2, dtype=torch.int32, device=device)
        self.out = torch.zeros(1, dtype=torch.float32, device=device)

    def _op(self, hidden: torch.Tensor, residual: torch.Tensor | None, weight: torch.Tensor,
            bias: float, pooling: int) -> float:
        self.cu[1] = hidden.shape[0]
        torch.ops.vsteer.probe_score(hidden, residual, self.cu, weight, bias, pooling, self.out)
        return float(self.out[0])

    def prefill(self, run: ProbeRun, hidden: torch.Tensor, residual: torch.Tensor | None,
                a: int, b: int, final: bool) -> bool:
        """Feed prompt rows a..b of this step; score when `final`. Returns whether the
        probe was scored now."""
        p = run.probe
        mean = p.pooling == "mean"
        if not (final or mean):
            return False  # last-token pooling: earlier chunks hold nothing it needs
        if final and run.acc is None and p.probe_type == "linear":
            run.score = self._op(hidden[a:b], residual[a:b] if residual is not None else None,
                                 run.weight["weight"], p.bias, POOL_MEAN if mean else POOL_LAST)
        else:
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
            run.score = self._pooled_score(run, v)
        run.done = True
        run.fired = run.score >= run.wire.threshold
        return True

    def _pooled_score(self, run: ProbeRun, v: torch.Tensor) -> float:
        p, t = run.probe, run.weight
        if p.probe_type == "linear":
            return self._op(v[None], None, t["weight"], p.bias, POOL_LAST)
        h = torch.relu(((v - t["mu"]) / t["sigma"]) @ t["w1"] + t["b1"])  # [M]
        return float(torch.sigmoid(h @ t["w2"] + p.bias))

    def token(self, run: ProbeRun, hidden: torch.Tensor, residual: torch.Tensor | None,
              t: int) -> float:
        res = residual[t:t + 1] if residual is not None else None
        return self._op(hidden[t:t + 1], res, run.token_weight, run.probe.token_bias,
                        PER_TOKEN)
