"""`vsteer refusal train-controller`: the learned weighted controller.

Two parts, trained together on the fit split (early stopping on the held-out split):
  - gate p(x): binary cross-entropy, harmful = 1, harmless = 0;
  - per-layer weights w(x) for layers after the input layer: with the weights applied
    (add w[l]·refusal[l] at every later layer, all positions, as the runtime does
    once the gate fires), the teacher-forced cross-entropy of a refusal reply on
    harmful prompts, plus a small L2 penalty on w (least steering that refuses).
See vsteer/artifacts/controller.py for the semantics the runtime runs.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from vsteer.artifacts import ModelFingerprint, RefusalController, RefusalDirection
from vsteer.refusal.calibrate import last_token_states
from vsteer.refusal.data import split_fit_heldout
from vsteer.refusal.extract import REFUSAL_REPLIES
from vsteer.refusal.hf_model import HFModel


class _MLP(nn.Module):
    def __init__(self, h: int, m: int, n_layers: int) -> None:
        super().__init__()
        self.l1, self.l2 = nn.Linear(h, m), nn.Linear(m, 1 + n_layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.l2(torch.relu(self.l1(z)))  # [B, 1 + L]


def train_controller(m: HFModel, fp: ModelFingerprint, direction: RefusalDirection,
                     direction_name: str, direction_sha: str, harmful: list[str],
                     harmless: list[str], input_layer: int | None = None, hidden: int = 32,
                     w_max: float = 1.5, epochs: int = 6, l2: float = 0.05, seed: int = 0
                     ) -> RefusalController:
    torch.manual_seed(seed)
    n = m.num_layers
    if input_layer is None:
        cal = direction.calibration
        input_layer = cal.condition_layer if cal is not None else n // 2
    fit_h, held_h = split_fit_heldout(harmful)
    fit_s, held_s = split_fit_heldout(harmless)
    xs = last_token_states(m, fit_h + fit_s, [input_layer])[:, 0]  # [N, H]
    ys = torch.tensor([1.0] * len(fit_h) + [0.0] * len(fit_s))
    xv = last_token_states(m, held_h + held_s, [input_layer])[:, 0]
    yv = torch.tensor([1.0] * len(held_h) + [0.0] * len(held_s))
    mu, sigma = xs.mean(0), xs.std(0).clamp_min(1e-3)
    net = _MLP(m.hidden_size, hidden, n)
    refusal = torch.stack([torch.from_numpy(direction.refusal[la]) for la in range(n)])
    later = (torch.arange(n) > input_layer).float()  # [L]
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    reply = REFUSAL_REPLIES[0]
    n_reply = len(m.tok(reply, add_special_tokens=False)["input_ids"])

    def weights(o: torch.Tensor) -> torch.Tensor:
        return w_max * torch.sigmoid(o[:, 1:]) * later  # [B, L]

    def refusal_ce(prompts: list[str], w: torch.Tensor) -> torch.Tensor:
        enc = m.batch(prompts, reply)
        add = w[:, :, None] * refusal[None]  # [B, L, H]
        with m.edited(lambda i, x: x + add[:, i][:, None, :]):
            # logits only where the loss reads them (the LM head dominates otherwise)
            logits = m.model(**enc, logits_to_keep=n_reply + 1).logits[:, :-1]  # [B, n, V]
        target = enc["input_ids"][:, -n_reply:]
        return nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                           target.reshape(-1))

    best, best_state, history = float("inf"), None, []
    order = torch.randperm(len(ys))
    for epoch in tqdm(range(epochs), desc="training the controller", unit="epoch"):
        net.train()
        for idx in order.split(16):
            o = net((xs[idx] - mu) / sigma)
            loss = nn.functional.binary_cross_entropy_with_logits(o[:, 0], ys[idx])
            harm = ys[idx] > 0
            if harm.any():
                w = weights(o[harm])
                prompts = [(fit_h + fit_s)[i] for i in idx[harm].tolist()]
                loss = loss + refusal_ce(prompts, w) + l2 * (w ** 2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            ov = net((xv - mu) / sigma)
            val = float(nn.functional.binary_cross_entropy_with_logits(ov[:, 0], yv))
            acc = float(((ov[:, 0] > 0).float() == yv).float().mean())
        history.append({"epoch": epoch, "val_bce": val, "val_gate_accuracy": acc})
        if val < best:
            best, best_state = val, {k: v.clone() for k, v in net.state_dict().items()}
        order = torch.randperm(len(ys))
    net.load_state_dict(best_state)
    sd = {k: v.detach().numpy().astype(np.float32) for k, v in net.state_dict().items()}
    return RefusalController(
        w1=sd["l1.weight"].T.copy(), b1=sd["l1.bias"], w2=sd["l2.weight"].T.copy(),
        b2=sd["l2.bias"], mu=mu.numpy().astype(np.float32),
        sigma=sigma.numpy().astype(np.float32), input_layer=input_layer, w_max=w_max,
        threshold=0.5, direction=direction_name, direction_sha256=direction_sha,
        fingerprint=fp, scores={"history": history, "fit": len(ys), "held_out": len(yv)})
