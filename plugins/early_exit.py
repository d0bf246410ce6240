"""Early exit inside the forward pass (control.early_exit).

Per step, the rows that sample a token for an early-exit request form a group (one per
predictor). At each candidate layer l (and at l - 1, for the cosine feature), on the
group's rows (x = hidden + residual, fp32):
    z = predictor logit (vsteer/artifacts/exit_predictor.py);  ok = z >= logit(threshold)
observe: a row's exit layer is the first l where ok; the logit-lens token there
         (final norm + LM head on x_l) is compared with the full model's token at the
         last layer. Nothing in the forward pass changes.
exit:    batch-level. When every row of the step is a decode token of an exit-mode
         request (one group) and ok holds for all rows at l, the step exits at l: each
         later decoder layer only writes its K/V for these tokens, computed from x_l
         (norm -> qkv -> rope -> cache; attention output and MLP skipped), and the
         stream after the last layer is x_l, so the sampler reads final-norm + LM head
         of x_l. Later tokens attend to that cache at full depth. Needs eager mode
         (data-dependent control flow); any other step runs every layer.
This reads back to the host between layers (a host job of the `decide` op): not
CUDA-graph safe, so on CUDA the runtime accepts early exit only in eager engines.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field

import torch

from vsteer.artifacts import ExitPredictor, read_verified
from vsteer.artifacts.exit_predictor import RMS_EPS, confidence_logit
from vsteer.wire import WireExit

UNKNOWN = -1  # agreement not measured (exit mode, or a token that did not exit)


@dataclass(frozen=True)
class ExitModel:
    predictor: ExitPredictor
    index: dict[int, int]  # candidate layer -> k
    weight: torch.Tensor  # [K, H + 1] fp32
    bias: torch.Tensor  # [K] fp32


@functools.lru_cache(maxsize=8)
def load_exit_model(path: str, sha256: str, device: str) -> ExitModel:
    """Parsed once per content hash and device (requests only read it)."""
    p = ExitPredictor.from_safetensors_bytes(read_verified(path, sha256))
    return ExitModel(p, {la: k for k, la in enumerate(p.layers)},
                     torch.from_numpy(p.weight).to(device),
                     torch.from_numpy(p.bias).to(device))


def exit_logits(x: torch.Tensor, prev: torch.Tensor, weight: torch.Tensor,
                bias: torch.Tensor) -> torch.Tensor:
    """x, prev: [n, H] fp32; weight [H + 1]; -> z [n] (torch twin of exit_features)."""
    rms = torch.sqrt((x * x).mean(-1) + RMS_EPS)  # [n]
    cos = (x * prev).sum(-1) / (x.norm(dim=-1) * prev.norm(dim=-1)).clamp_min(1e-12)
    return (x @ weight[:-1]) / rms + cos * weight[-1] + bias


@dataclass
class ExitRun:
    """One request's early-exit control, as the worker holds it."""

    wire: WireExit
    model: ExitModel
    logit_thresholds: list[float]  # per candidate layer

    @classmethod
    def load(cls, w: WireExit, device: torch.device) -> ExitRun:
        m = load_exit_model(w.path, w.sha256, str(device))
        if len(w.thresholds) != len(m.predictor.layers):
            raise ValueError("exit thresholds do not match the predictor's layers")
        return cls(w, m, [confidence_logit(t) for t in w.thresholds])


@dataclass
class ExitGroup:
    """This step's sampling rows of the early-exit requests sharing one predictor."""

    model: ExitModel
    rids: list[str]
    rows: torch.Tensor  # [n] int64 token rows
    thresholds: torch.Tensor  # [n, K] logits
    observe: list[bool]  # per row: observe mode (else exit mode)
    may_skip: bool  # the whole step may exit (batch-level exit)
    layers: list[int]  # layers whose job runs: live candidates and the layer before each
    exit_layer: list[int] = field(init=False)  # per row; -1 = not yet
    agree: list[int] = field(init=False)  # per row (observe)
    stash: dict[int, torch.Tensor] = field(default_factory=dict)  # row -> x at exit
    prev: torch.Tensor | None = None  # [n, H] stream at the previous layer
    choices: list[int] = field(default_factory=list)  # per row: its reply's choice

    def __post_init__(self) -> None:
        self.exit_layer = [-1] * len(self.rids)
        self.agree = [UNKNOWN] * len(self.rids)

    @classmethod
    def plan(cls, runs: list[ExitRun], rids: list[str], rows: list[int], may_skip: bool,
             device: torch.device) -> ExitGroup:
        """A group of requests sharing runs[0].model; a candidate layer is checked only
        if some row's threshold there is reachable (decided on the host)."""
        model = runs[0].model
        live = [any(t < math.inf for t in col)
                for col in zip(*(r.logit_thresholds for r in runs), strict=True)]
        wanted = {la for la, ok in zip(model.predictor.layers, live, strict=True) if ok}
        return cls(model, rids, torch.tensor(rows, dtype=torch.long, device=device),
                   torch.tensor([r.logit_thresholds for r in runs], dtype=torch.float32,
                                device=device),
                   [r.wire.mode == "observe" for r in runs], may_skip,
                   sorted(wanted | {la - 1 for la in wanted}))

    def check(self, layer: int, x: torch.Tensor) -> bool:
        """Score the rows at `layer` (x: [n, H] fp32). True: the whole step exits here."""
        k = self.model.index.get(layer)
        prev, self.prev = self.prev, x
        if k is None or prev is None:
            return False
        z = exit_logits(x, prev, self.model.weight[k], self.model.bias[k])  # [n]
        ok = (z >= self.thresholds[:, k]).tolist()
        if self.may_skip and all(ok):
            self.exit_layer = [layer] * len(ok)
            return True
        for i, hit in enumerate(ok):
            if hit and self.exit_layer[i] < 0 and self.observe[i]:
                self.exit_layer[i] = layer
                self.stash[i] = x[i]
        return False
