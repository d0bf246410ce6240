"""`vsteer experts ...`: find an expert set (MoTE's recipe) and list the saved ones."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from vsteer.vector_cli import _store


def add_experts_commands(sub: argparse._SubParsersAction) -> None:
    ex = sub.add_parser("experts", help="mixture-of-experts expert sets (the `experts` "
                        "control)").add_subparsers(metavar="ACTION")
    find = ex.add_parser("find", help="rank (layer, expert) pairs by routing share on "
                         "positive minus negative prompts; save the top ones as a set")
    find.add_argument("--name", required=True)
    find.add_argument("--positive", type=Path, default=None,
                      help='JSONL of {"prompt": ...} (default: the shipped harmful '
                           "instructions, train split)")
    find.add_argument("--negative", type=Path, default=None,
                      help="JSONL of {\"prompt\": ...} (default: the shipped harmless "
                           "instructions, train split)")
    find.add_argument("--limit", type=int, default=None, help="use the first N of each")
    find.add_argument("--top", type=int, default=10, help="pairs in the set")
    find.add_argument("--max-tokens", type=int, default=32,
                      help="tokens of the model's own greedy reply routed with each prompt")
    find.add_argument("--model", default="default")
    find.add_argument("--artifacts", type=Path, default=None)
    find.add_argument("--overwrite", action="store_true")
    find.set_defaults(func=_find)
    ls = ex.add_parser("list", help="list saved expert sets")
    ls.add_argument("--artifacts", type=Path, default=None)
    ls.set_defaults(func=_list)


def _find(args: argparse.Namespace) -> int:
    from transformers import AutoConfig

    from vsteer.artifacts import ArtifactError
    from vsteer.artifacts.expert_set import KIND, ExpertSet
    from vsteer.eval_engine import EvalEngine
    from vsteer.experts.find import contrast_experts, routing_shares
    from vsteer.experts.plot import plot_contrast
    from vsteer.model import resolve_model
    from vsteer.refusal.data import default_set, load_prompts

    model = resolve_model(args.model)
    cfg = AutoConfig.from_pretrained(model)
    cfg = getattr(cfg, "text_config", None) or cfg
    if not getattr(cfg, "num_experts_per_tok", None):  # before an engine is started
        print(f"vsteer experts find: {model} is not a mixture-of-experts model "
              f"({cfg.architectures[0] if cfg.architectures else cfg.model_type})",
              file=sys.stderr)
        return 2
    store = _store(args)
    if store.path(KIND, args.name).exists() and not args.overwrite:
        print(f"vsteer experts find: expert set {args.name!r} exists (--overwrite)",
              file=sys.stderr)
        return 1
    pos_path = args.positive or default_set("harmful", "train")
    neg_path = args.negative or default_set("harmless", "train")
    try:
        pos, neg = (load_prompts(p)[: args.limit] for p in (pos_path, neg_path))
    except (OSError, ValueError) as e:
        print(f"vsteer experts find: {e}", file=sys.stderr)
        return 2
    with EvalEngine(model, store.root) as engine:
        info = engine.hello["controls"]["experts"]
        try:
            pos_r = routing_shares(engine, pos, args.max_tokens, "positive prompts")
        except ValueError as e:
            print(f"vsteer experts find: {e}", file=sys.stderr)
            return 2
        neg_r = routing_shares(engine, neg, args.max_tokens, "negative prompts")
        fp = engine.fingerprint
    ranked = contrast_experts(pos_r, neg_r, args.top, int(info["top_k"]))
    if not ranked:
        print("vsteer experts find: no expert is routed to more on the positive prompts",
              file=sys.stderr)
        return 1
    provenance = {"positive": str(pos_path), "negative": str(neg_path),
                  "prompts": [len(pos), len(neg)], "tokens": [pos_r.tokens, neg_r.tokens],
                  "max_tokens": args.max_tokens, "top_k": int(info["top_k"]),
                  "shares": [[r.positive, r.negative] for r in ranked]}
    try:
        s = ExpertSet([(r.layer, r.expert) for r in ranked], [r.score for r in ranked],
                      int(info["num_experts"]), fp, provenance)
        path = store.save(KIND, args.name, s, overwrite=args.overwrite)
    except (ArtifactError, FileExistsError) as e:
        print(f"vsteer experts find: {e}", file=sys.stderr)
        return 1
    plot = plot_contrast(pos_r, neg_r, ranked, store.root / "reports" / f"experts-{args.name}.png")
    print(json.dumps({"experts": args.name, "path": str(path), "plot": str(plot),
                      "tokens": [pos_r.tokens, neg_r.tokens],
                      "pairs": [r.__dict__ for r in ranked]}))
    return 0


def _list(args: argparse.Namespace) -> int:
    store = _store(args)
    for name in store.names("experts"):
        s = store.get("experts", name).value
        layers = s.by_layer()
        print(f"{name}: {len(s.pairs)} experts over layers {sorted(layers)} "
              f"(of {s.num_experts} per router), best score {max(s.scores):.3f}")
    return 0
