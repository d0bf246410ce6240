"""`vsteer vector ...`: extract, list, import/export llama.cpp GGUF control vectors."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path

from vsteer.paths import vsteer_home

DEMO_PAIRS = "joyful_gloomy.jsonl"


def default_artifacts() -> Path:
    return vsteer_home() / "artifacts"


def add_vector_commands(sub: argparse._SubParsersAction) -> None:
    vec = sub.add_parser("vector", help="steering vectors").add_subparsers(metavar="ACTION")

    ex = vec.add_parser("extract", help="extract a vector from contrastive pairs")
    ex.add_argument("--model", default="default")
    ex.add_argument("--pairs", default=None,
                    help=f"JSONL of {{positive, negative}} (default: the shipped {DEMO_PAIRS})")
    ex.add_argument("--layers", default="all", help='"A-B" (inclusive), "3,5,7" or "all"')
    ex.add_argument("--method", choices=["diffmean", "pca"], default="diffmean")
    ex.add_argument("--name", required=True)
    ex.add_argument("--artifacts", type=Path, default=None)
    ex.add_argument("--overwrite", action="store_true")
    ex.add_argument("--batch-size", type=int, default=32)
    ex.set_defaults(func=_extract)

    ls = vec.add_parser("list", help="list vectors in the artifact directory")
    ls.add_argument("--artifacts", type=Path, default=None)
    ls.set_defaults(func=_list)

    imp = vec.add_parser("import-gguf", help="import a llama.cpp / repeng control vector")
    imp.add_argument("file", type=Path)
    imp.add_argument("--name", required=True)
    imp.add_argument("--model", default="default", help="model the vector is for")
    imp.add_argument("--artifacts", type=Path, default=None)
    imp.add_argument("--overwrite", action="store_true")
    imp.set_defaults(func=_import_gguf)

    exp = vec.add_parser("export-gguf", help="export a vector as a llama.cpp control vector")
    exp.add_argument("name")
    exp.add_argument("--out", type=Path, required=True)
    exp.add_argument("--artifacts", type=Path, default=None)
    exp.set_defaults(func=_export_gguf)

    from vsteer.dose_cli import add_calibrate_command

    add_calibrate_command(vec)


def _store(args: argparse.Namespace):
    from vsteer.artifacts import ArtifactStore

    return ArtifactStore(args.artifacts or default_artifacts())


def _pairs_path(arg: str | None) -> Path:
    if arg:
        return Path(arg)
    return Path(str(resources.files("vsteer.data").joinpath(DEMO_PAIRS)))


def _extract(args: argparse.Namespace) -> int:
    from vsteer.artifacts import check_name
    from vsteer.capture import HiddenStateCapturer
    from vsteer.extract import build_vector, load_pairs, parse_layers, pool
    from vsteer.model import resolve_model

    check_name(args.name)
    store = _store(args)
    if store.path("vector", args.name).exists() and not args.overwrite:
        print(f"vector {args.name!r} exists in {store.root} (use --overwrite)", file=sys.stderr)
        return 1
    pairs_path = _pairs_path(args.pairs)
    pairs = load_pairs(pairs_path)
    model = resolve_model(args.model)
    cap = HiddenStateCapturer(model)
    try:
        fp = cap.fingerprint
        layers = parse_layers(args.layers, fp.num_layers)
        texts = [t for p in pairs for t in p]  # pos0, neg0, pos1, neg1, ...
        states = pool(cap.capture(texts, layers, args.batch_size))  # [2N, L, H]
    finally:
        cap.close()
    vec = build_vector(states[0::2], states[1::2], layers, args.method, fp, {
        "pairs": str(pairs_path.name), "num_pairs": len(pairs), "model": str(model),
        "pooling": "mean over tokens", "tool": "vsteer vector extract",
        "at": datetime.now(UTC).isoformat(timespec="seconds")})
    path = store.save_vector(args.name, vec, overwrite=args.overwrite)
    print(f"saved {args.name}: {len(layers)} layers, method {args.method} -> {path}")
    return 0


def _list(args: argparse.Namespace) -> int:
    store = _store(args)
    for name in store.names("vector"):
        s = store.get_vector(name)
        v = s.vector
        print(f"{name}\t{v.fingerprint.architecture}/{v.fingerprint.hidden_size}\t"
              f"layers {v.layers[0]}-{v.layers[-1]} ({len(v.layers)})\t{v.method}\t{v.created}")
    return 0


def _import_gguf(args: argparse.Namespace) -> int:
    from transformers import AutoConfig

    from vsteer.artifacts import ModelFingerprint
    from vsteer.artifacts.gguf_io import import_gguf
    from vsteer.model import resolve_model

    fp = ModelFingerprint.from_hf_config(AutoConfig.from_pretrained(resolve_model(args.model)))
    vec = import_gguf(args.file, fp)
    path = _store(args).save_vector(args.name, vec, overwrite=args.overwrite)
    print(f"imported {args.file} as {args.name}: layers {vec.layers} -> {path}")
    return 0


def _export_gguf(args: argparse.Namespace) -> int:
    from vsteer.artifacts.gguf_io import export_gguf

    vec = _store(args).get_vector(args.name).vector
    export_gguf(vec, args.out)
    print(f"exported {args.name} ({len(vec.layers)} layers) -> {args.out}")
    return 0
