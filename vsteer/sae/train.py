"""Train a small SAE on the model's own text with SAELens (`vsteer sae train`).

    corpus      = the model's sampled chat replies to `prompts` (temperature 1), token ids
                  of template + reply; the first token of each (an attention sink, whose
                  stream norm is far from the rest) is dropped
    activations = the stream after `layer` (transformers' hidden_states[layer + 1], fp32)
                  at every other corpus token, shuffled; a held-out tenth scores the SAE
    training    = SAELens's StandardTrainingSAE (ReLU, L1 penalty on act · ‖W_dec‖)
                  under its SAETrainer, fed from that buffer in shuffled batches; then
                  each decoder row is scaled to unit norm and its encoder column by the
                  inverse (the same SAE), so `add` with value v adds a vector of norm v
                  and an activation reads in the stream's units
    saved       = SAELens's inference layout (cfg.json + sae_weights.safetensors, hook
                  blocks.{layer}.hook_resid_post), which `vsteer sae import` reads

SAELens is imported here only: serving never needs it.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from vsteer.refusal.hf_model import HFModel, chunks


@dataclass(frozen=True)
class TrainConfig:
    layer: int
    features: int = 1024
    reply_tokens: int = 64
    l1: float = 5.0
    steps: int = 3000
    batch: int = 256
    lr: float = 4e-4
    seed: int = 0


@dataclass(frozen=True)
class TrainReport:
    layer: int
    features: int
    tokens: int  # activations trained on
    held_out_tokens: int
    explained_variance: float  # on the held-out tokens: 1 - ‖x - x̂‖² / ‖x - mean‖²
    l0: float  # mean active features per held-out token
    dead_features: int  # never active on the held-out tokens

    def to_dict(self) -> dict:
        return asdict(self)


@torch.no_grad()
def sample_corpus(m: HFModel, prompts: list[str], reply_tokens: int, seed: int,
                  batch: int = 16) -> list[list[int]]:
    """Token ids (chat template + a sampled reply, padding removed) per prompt."""
    torch.manual_seed(seed)
    seqs: list[list[int]] = []
    pad = m.tok.pad_token_id
    for chunk in tqdm(list(chunks(prompts, batch)), desc="sampling corpus", unit="batch"):
        enc = m.batch(chunk)
        out = m.model.generate(**enc, max_new_tokens=reply_tokens, do_sample=True,
                               temperature=1.0, top_p=0.95, pad_token_id=pad)  # [B, T]
        width = enc["input_ids"].shape[1]
        for row, mask in zip(out, enc["attention_mask"], strict=True):
            prompt = row[:width][mask.bool()].tolist()
            reply = row[width:].tolist()
            if m.tok.eos_token_id in reply:
                reply = reply[: reply.index(m.tok.eos_token_id) + 1]
            seqs.append(prompt + reply)
    return seqs


@torch.no_grad()
def corpus_activations(m: HFModel, seqs: list[list[int]], layer: int,
                       batch: int = 16) -> torch.Tensor:
    """[N, H] streams after `layer` at every token but each sequence's first."""
    rows = []
    for chunk in tqdm(list(chunks(seqs, batch)), desc=f"layer {layer} streams", unit="batch"):
        states = m.streams(chunk)[layer]  # [B, T, H], right-padded
        rows += [states[i, 1:len(s)] for i, s in enumerate(chunk)]
    return torch.cat(rows)


def _batches(acts: torch.Tensor, batch: int, seed: int) -> Iterator[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    for _ in itertools.count():
        order = torch.randperm(len(acts), generator=g)
        for i in range(0, len(order) - batch + 1, batch):
            yield acts[order[i:i + batch]]


def train_sae(acts: torch.Tensor, cfg: TrainConfig, model_name: str):
    """SAELens StandardTrainingSAE fitted on acts [N, H]; returns (sae, report)."""
    from sae_lens import SAETrainer, StandardTrainingSAE, StandardTrainingSAEConfig
    from sae_lens.config import LoggingConfig, SAETrainerConfig

    torch.manual_seed(cfg.seed)
    g = torch.Generator().manual_seed(cfg.seed)
    order = torch.randperm(len(acts), generator=g)
    n_held = max(1, len(acts) // 10)
    held, train = acts[order[:n_held]], acts[order[n_held:]]
    if len(train) < cfg.batch:
        raise ValueError(f"{len(train)} training tokens: fewer than one batch ({cfg.batch})")
    sae_cfg = StandardTrainingSAEConfig(
        d_in=acts.shape[1], d_sae=cfg.features, l1_coefficient=cfg.l1,
        l1_warm_up_steps=cfg.steps // 10, apply_b_dec_to_input=True)
    sae_cfg.metadata.hook_name = f"blocks.{cfg.layer}.hook_resid_post"
    sae_cfg.metadata.model_name = model_name
    sae = StandardTrainingSAE(sae_cfg)
    trainer_cfg = SAETrainerConfig(
        total_training_samples=cfg.steps * cfg.batch, train_batch_size_samples=cfg.batch,
        lr=cfg.lr, lr_end=cfg.lr / 10, lr_warm_up_steps=cfg.steps // 20, device="cpu",
        dead_feature_window=cfg.steps, feature_sampling_window=cfg.steps,
        logger=LoggingConfig(log_to_wandb=False))
    SAETrainer(trainer_cfg, sae, _batches(train, cfg.batch, cfg.seed)).fit()
    sae.fold_W_dec_norm()
    return sae, _score(sae, held, cfg, len(train))


@torch.no_grad()
def _score(sae, held: torch.Tensor, cfg: TrainConfig, n_train: int) -> TrainReport:
    feats = sae.encode(held)  # [n, F]
    recon = sae.decode(feats)  # [n, H]
    resid = (held - recon).pow(2).sum()
    total = (held - held.mean(0)).pow(2).sum()
    return TrainReport(
        layer=cfg.layer, features=cfg.features, tokens=n_train, held_out_tokens=len(held),
        explained_variance=float(1 - resid / total),
        l0=float((feats > 0).float().sum(-1).mean()),
        dead_features=int(((feats > 0).sum(0) == 0).sum()))


def save(sae, out: Path, report: TrainReport, cfg: TrainConfig) -> None:
    """SAELens's inference layout, plus train.json (config and held-out scores)."""
    sae.save_inference_model(out)
    (out / "train.json").write_text(json.dumps(
        {"config": asdict(cfg), "report": report.to_dict()}, indent=2) + "\n")
