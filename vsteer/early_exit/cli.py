"""`vsteer exit train` and `vsteer bench early-exit`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_exit_commands(sub: argparse._SubParsersAction) -> None:
    ex = sub.add_parser("exit", aliases=["early-exit"], help="early exit: train exit predictors")
    acts = ex.add_subparsers(metavar="ACTION")
    tr = acts.add_parser("train", help="fit and calibrate per-layer exit predictors")
    tr.add_argument("--model", default="default")
    tr.add_argument("--corpus", type=Path, default=None,
                    help="JSONL of {prompt[, completion]} or {text} rows (default: the "
                         "model's own answers to the prompts shipped with vsteer)")
    tr.add_argument("--name", required=True)
    tr.add_argument("--artifacts", type=Path, default=None)
    tr.add_argument("--layers", default=None,
                    help="candidate exit layers, e.g. 4-27 or 10,20 (default: L/8 .. L-2)")
    tr.add_argument("--limit", type=int, default=None, help="first N corpus rows only")
    tr.add_argument("--max-tokens", type=int, default=None,
                    help="answer length when the model writes the corpus (default 96)")
    tr.add_argument("--report", type=Path, default=None,
                    help="report directory (default: <artifacts>/reports/exit-<name>)")
    tr.add_argument("--threads", type=int, default=None)
    tr.add_argument("--dtype", default="float32", help="engine dtype for corpus answers")
    tr.add_argument("--overwrite", action="store_true")
    tr.set_defaults(func=_train)


def add_exit_bench(bench: argparse._SubParsersAction) -> None:
    be = bench.add_parser("early-exit", help="decode speed and token agreement with exit")
    be.add_argument("--model", default="default")
    be.add_argument("--artifacts", type=Path, default=None)
    be.add_argument("--predictor", required=True, help="exit predictor artifact name")
    be.add_argument("--prompts", type=Path, default=None,
                    help="JSONL of {prompt} rows (default: the last 8 shipped exit "
                         "prompts)")
    be.add_argument("--out", type=Path, required=True)
    be.add_argument("--targets", default=None,
                    help="comma-separated agreement targets to sweep (default: all the "
                         "predictor's calibrated targets)")
    be.add_argument("--thresholds", default="",
                    help="comma-separated raw confidence thresholds to sweep as well")
    be.add_argument("--max-tokens", type=int, default=64)
    be.add_argument("--batch", type=int, default=1,
                    help="requests per engine step (exit is decided per step: 1 exits most)")
    be.add_argument("--limit", type=int, default=None)
    be.add_argument("--dtype", default="float32")
    be.set_defaults(func=_bench)


def _train(args: argparse.Namespace) -> int:
    from vsteer.artifacts import ArtifactStore, ModelFingerprint, check_name
    from vsteer.early_exit.corpus import (
        DEFAULT_MAX_TOKENS,
        answer_missing,
        read_corpus,
        shipped_prompts,
        to_sequences,
    )
    from vsteer.early_exit.plots import plot_train_report
    from vsteer.early_exit.states import extract_exit_states
    from vsteer.early_exit.train import train_exit_predictor
    from vsteer.extract import parse_layers
    from vsteer.model import resolve_model
    from vsteer.refusal.hf_model import HFModel
    from vsteer.vector_cli import default_artifacts

    check_name(args.name)
    store = ArtifactStore(args.artifacts or default_artifacts())
    if store.path("exit", args.name).exists() and not args.overwrite:
        raise SystemExit(f"exit predictor {args.name!r} exists (use --overwrite)")
    model = resolve_model(args.model)
    rows = read_corpus(args.corpus) if args.corpus else shipped_prompts()
    rows = rows[: args.limit] if args.limit else rows
    source = str(args.corpus) if args.corpus else "vsteer/data/exit_prompts.jsonl (model answers)"
    rows = answer_missing(model, rows, args.max_tokens or DEFAULT_MAX_TOKENS, args.dtype)
    m = HFModel(model, args.threads)
    n_l = m.num_layers
    layers = (parse_layers(args.layers, n_l) if args.layers
              else list(range(max(1, n_l // 8), n_l - 1)))
    if not all(1 <= la <= n_l - 2 for la in layers):
        raise SystemExit(f"--layers must lie in 1..{n_l - 2}")
    states = extract_exit_states(m, to_sequences(m.tok, rows), layers)
    fp = ModelFingerprint(m.model.config.architectures[0], m.hidden_size, n_l)
    pred, report = train_exit_predictor(states, fp, source)
    path = store.write_bytes("exit", args.name, pred.to_safetensors_bytes(), args.overwrite)
    out = args.report or store.root / "reports" / f"exit-{args.name}"
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "corpus.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    plot_train_report(out, report)
    print(json.dumps({"exit_predictor": str(path), "report": str(out),
                      "tokens": report["tokens"], "cascade": report["cascade"]}, indent=2))
    return 0


def _bench(args: argparse.Namespace) -> int:
    from vsteer.early_exit.bench import run_exit_bench
    from vsteer.model import resolve_model
    from vsteer.vector_cli import default_artifacts

    targets = [float(t) for t in args.targets.split(",")] if args.targets else None
    thresholds = [float(t) for t in args.thresholds.split(",") if t]
    report = run_exit_bench(resolve_model(args.model), args.artifacts or default_artifacts(),
                            args.predictor, args.prompts, args.out, targets, thresholds,
                            args.max_tokens, args.batch, args.limit, args.dtype)
    print(json.dumps({k: report[k] for k in ("speedup", "token_agreement", "target",
                                             "baseline_tokens_per_s")}, indent=2))
    return 0
