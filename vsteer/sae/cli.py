"""`vsteer sae ...`: import an SAE saved by SAELens; list the imported ones."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vsteer.vector_cli import _store


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
