"""`vsteer sae ...`: train an SAE with SAELens on the model's own text, import one saved
by SAELens, rank features by a contrast, list the imported ones."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vsteer.sae.train import TrainConfig
from vsteer.vector_cli import _pairs_path, _store


def add_sae_commands(sub: argparse._SubParsersAction) -> None:
    sae = sub.add_parser("sae", help="sparse autoencoders (SAE features)").add_subparsers(
        metavar="ACTION")
    imp = sae.add_parser("import", help="import an SAE saved in SAELens's layout "
                         "(cfg.json + sae_weights.safetensors)")
    imp.add_argument("dir", type=Path)
    imp.add_argument("--name", required=True)
    imp.add_argument("--model", default="default", help="model the SAE is for")
    imp.add_argument("--artifacts", type=Path, default=None)
    imp.add_argument("--overwrite", action="store_true")
    imp.set_defaults(func=_import)
    tr = sae.add_parser("train", help="train a small SAE with SAELens on the model's own "
                        "sampled replies, then import it")
    tr.add_argument("--name", required=True)
    tr.add_argument("--layer", type=int, required=True, help="the stream after this layer")
    tr.add_argument("--model", default="default")
    tr.add_argument("--artifacts", type=Path, default=None)
    tr.add_argument("--prompts", type=Path, default=None,
                    help='JSONL of {"prompt": ...} to sample replies to (default: the '
                         "shipped harmless instructions)")
    tr.add_argument("--samples", type=int, default=2, help="replies sampled per prompt")
    tr.add_argument("--reply-tokens", type=int, default=TrainConfig.reply_tokens)
    tr.add_argument("--features", type=int, default=TrainConfig.features)
    tr.add_argument("--l1", type=float, default=TrainConfig.l1)
    tr.add_argument("--steps", type=int, default=TrainConfig.steps)
    tr.add_argument("--batch", type=int, default=TrainConfig.batch)
    tr.add_argument("--lr", type=float, default=TrainConfig.lr)
    tr.add_argument("--seed", type=int, default=TrainConfig.seed)
    tr.add_argument("--threads", type=int, default=None)
    tr.add_argument("--out", type=Path, default=None,
                    help="where the SAELens files go (default <artifacts>/reports/sae-NAME)")
    tr.add_argument("--overwrite", action="store_true")
    tr.set_defaults(func=_train)
    con = sae.add_parser("contrast", help="rank an SAE's features by mean activation on "
                         "positive minus negative texts")
    con.add_argument("name")
    con.add_argument("--pairs", type=Path, default=None,
                     help='JSONL of {"positive": ..., "negative": ...} (default: the '
                          "shipped joyful/gloomy pairs)")
    con.add_argument("--limit", type=int, default=None, help="use the first N pairs")
    con.add_argument("--top", type=int, default=5)
    con.add_argument("--model", default="default")
    con.add_argument("--artifacts", type=Path, default=None)
    con.set_defaults(func=_contrast)
    ls = sae.add_parser("list", help="list imported SAEs")
    ls.add_argument("--artifacts", type=Path, default=None)
    ls.set_defaults(func=_list)


def _import(args: argparse.Namespace) -> int:
    from transformers import AutoConfig

    from vsteer.artifacts import ArtifactError, ModelFingerprint
    from vsteer.artifacts.sae import KIND
    from vsteer.model import resolve_model
    from vsteer.sae.saelens_import import read_saelens

    fp = ModelFingerprint.from_hf_config(AutoConfig.from_pretrained(resolve_model(args.model)))
    try:
        sae = read_saelens(args.dir, fp)
        path = _store(args).save(KIND, args.name, sae, overwrite=args.overwrite)
    except (ArtifactError, FileExistsError) as e:
        print(f"vsteer sae import: {e}", file=sys.stderr)
        return 1
    print(f"imported {args.dir} as {args.name}: layer {sae.layer}, "
          f"{sae.num_features} features, {sae.architecture} -> {path}")
    return 0


def _list(args: argparse.Namespace) -> int:
    store = _store(args)
    for name in store.names("sae"):
        sae = store.get("sae", name).value
        print(f"{name}\tlayer {sae.layer}\t{sae.num_features} features\t{sae.architecture}")
    return 0


def _train(args: argparse.Namespace) -> int:
    import importlib.util
    import json
    from importlib import resources

    from transformers import AutoConfig

    from vsteer.artifacts import ArtifactError, ModelFingerprint
    from vsteer.artifacts.sae import KIND
    from vsteer.model import resolve_model
    from vsteer.refusal.data import load_prompts
    from vsteer.refusal.hf_model import HFModel
    from vsteer.sae.saelens_import import read_saelens
    from vsteer.sae.train import corpus_activations, sample_corpus, save, train_sae

    if importlib.util.find_spec("sae_lens") is None:
        print("vsteer sae train needs SAELens: pip install 'vsteer[sae]'", file=sys.stderr)
        return 2
    model_dir = resolve_model(args.model)
    fp = ModelFingerprint.from_hf_config(AutoConfig.from_pretrained(model_dir))
    if not 0 <= args.layer < fp.num_layers:
        print(f"vsteer sae train: layer {args.layer} is out of range (the model has "
              f"{fp.num_layers})", file=sys.stderr)
        return 2
    store = _store(args)
    if args.name in store.names(KIND) and not args.overwrite:
        print(f"vsteer sae train: {args.name!r} exists (--overwrite replaces it)",
              file=sys.stderr)
        return 1
    path = args.prompts or Path(str(resources.files("vsteer.data").joinpath(
        "refusal/harmless_train.jsonl")))
    cfg = TrainConfig(layer=args.layer, features=args.features, reply_tokens=args.reply_tokens,
                      l1=args.l1, steps=args.steps, batch=args.batch, lr=args.lr,
                      seed=args.seed)
    m = HFModel(model_dir, args.threads)
    seqs = sample_corpus(m, load_prompts(path) * args.samples, cfg.reply_tokens, cfg.seed)
    acts = corpus_activations(m, seqs, cfg.layer)
    sae, report = train_sae(acts, cfg, Path(model_dir).name)
    out = args.out or store.root / "reports" / f"sae-{args.name}"
    save(sae, out, report, cfg)
    try:
        saved = store.save(KIND, args.name, read_saelens(out, fp), overwrite=args.overwrite)
    except ArtifactError as e:
        print(f"vsteer sae train: {e}", file=sys.stderr)
        return 1
    print(json.dumps({"sae": args.name, **report.to_dict(), "prompts": path.name,
                      "saelens_dir": str(out), "artifact": str(saved)}))
    return 0


def _contrast(args: argparse.Namespace) -> int:
    import json

    from vsteer.extract import load_pairs
    from vsteer.model import resolve_model
    from vsteer.refusal.hf_model import HFModel
    from vsteer.sae.contrast import contrast_features

    store = _store(args)
    try:
        sae = store.get("sae", args.name).value
    except KeyError:
        print(f"vsteer sae contrast: no SAE {args.name!r} in {store.root}", file=sys.stderr)
        return 1
    pairs = load_pairs(_pairs_path(str(args.pairs) if args.pairs else None))[: args.limit]
    ranked = contrast_features(HFModel(resolve_model(args.model)), sae, pairs)
    top = [r.to_dict() for r in ranked[: args.top]]
    bottom = [r.to_dict() for r in ranked[::-1][: args.top]]
    print(json.dumps({"sae": args.name, "pairs": len(pairs), "positive": top,
                      "negative": bottom}, indent=2))
    return 0
