"""`vsteer probe dataset | train` and `vsteer eval probe`."""

from __future__ import annotations

import argparse
import collections
import json
from pathlib import Path


def add_probe_commands(sub: argparse._SubParsersAction) -> None:
    pr = sub.add_parser("probe", aliases=["hallucination"],
                        help="hallucination probes: data, training")
    acts = pr.add_subparsers(metavar="ACTION")

    ds = acts.add_parser("dataset", help="build a labelled closed-book QA set")
    ds.add_argument("--model", default="default")
    ds.add_argument("--out", type=Path, required=True)
    ds.add_argument("--questions", type=Path, default=None,
                    help='JSONL of {"question": ..., "answers": [...]} (default: the '
                         "shipped sources, see --sources)")
    ds.add_argument("--sources", default="geography",
                    help="shipped question sources: all, or a comma list of geography and "
                         "the families in vsteer/data/qa")
    ds.add_argument("--limit", type=int, default=None,
                    help="N questions only, spread evenly over the set")
    ds.add_argument("--dtype", default="float32")
    ds.set_defaults(func=_dataset)

    tr = acts.add_parser("train", help="train a pre-decoding (and a per-token) probe")
    tr.add_argument("--model", default="default")
    tr.add_argument("--data", type=Path, required=True)
    tr.add_argument("--name", required=True)
    tr.add_argument("--artifacts", type=Path, default=None)
    tr.add_argument("--report", type=Path, default=None,
                    help="report directory (default: <artifacts>/reports/probe-<name>)")
    tr.add_argument("--threads", type=int, default=None)
    tr.add_argument("--overwrite", action="store_true")
    tr.set_defaults(func=_train)


def add_probe_eval(evals: argparse._SubParsersAction) -> None:
    ev = evals.add_parser("probe", aliases=["hallucination"],
                          help="AUROC, abstention and accuracy on held-out questions")
    ev.add_argument("--model", default="default")
    ev.add_argument("--artifacts", type=Path, default=None)
    ev.add_argument("--probe", default=None, help="the probe to evaluate (not with --loso)")
    ev.add_argument("--questions", type=Path, default=None,
                    help="JSONL questions; only split=test lines are used (no split = test)")
    ev.add_argument("--loso", type=Path, default=None, metavar="LABELLED",
                    help="left-one-source-out on labelled rows from `vsteer probe dataset "
                         "--sources all`: train without each source, test on it")
    ev.add_argument("--max-error", type=float, action="append", default=None,
                    help="with --loso: max_error targets to check (default 0.1, 0.2, 0.3)")
    ev.add_argument("--threads", type=int, default=None)
    ev.add_argument("--out", type=Path, required=True)
    ev.add_argument("--limit", type=int, default=None)
    ev.add_argument("--dtype", default="float32")
    ev.set_defaults(func=_eval)


def _dataset(args: argparse.Namespace) -> int:
    from vsteer.model import resolve_model
    from vsteer.probe.dataset import answer_questions, load_questions, write_jsonl
    from vsteer.probe.sources import load_sources

    qs = load_questions(args.questions) if args.questions else load_sources(args.sources)
    if args.limit:
        qs = qs[:: max(1, len(qs) // args.limit)][: args.limit]
    rows = answer_questions(resolve_model(args.model), qs, args.dtype)
    write_jsonl(args.out, rows)
    acc = collections.defaultdict(list)
    for r in rows:
        acc[r.get("source", r["family"])].append(r["correct"])
    print(json.dumps({"questions": len(rows), "out": str(args.out),
                      "accuracy": sum(r["correct"] for r in rows) / max(len(rows), 1),
                      "by_source": {k: round(sum(v) / len(v), 3) for k, v in acc.items()}},
                     indent=2))
    return 0


def _train(args: argparse.Namespace) -> int:
    from vsteer.artifacts import ArtifactStore, check_name
    from vsteer.model import resolve_model
    from vsteer.probe.dataset import read_jsonl
    from vsteer.probe.train import train_probe, write_train_report
    from vsteer.refusal.hf_model import HFModel
    from vsteer.vector_cli import default_artifacts

    check_name(args.name)
    store = ArtifactStore(args.artifacts or default_artifacts())
    if store.path("probe", args.name).exists() and not args.overwrite:
        raise SystemExit(f"probe {args.name!r} exists (use --overwrite)")
    rows = [r for r in read_jsonl(args.data) if r.get("split", "train") == "train"]
    m = HFModel(resolve_model(args.model), args.threads)
    probe, report = train_probe(m, rows, str(args.data))
    path = store.write_bytes("probe", args.name, probe.to_safetensors_bytes(), args.overwrite)
    out = args.report or store.root / "reports" / f"probe-{args.name}"
    write_train_report(out, report)
    print(json.dumps({"probe": str(path), "report": str(out), **report["chosen"]}, indent=2))
    return 0


def _eval_loso(args: argparse.Namespace) -> int:
    from vsteer.model import resolve_model
    from vsteer.probe.dataset import read_jsonl
    from vsteer.probe.loso import MAX_ERRORS, run_probe_loso
    from vsteer.probe.loso_report import write_probe_loso_report
    from vsteer.refusal.hf_model import HFModel

    rows = read_jsonl(args.loso)
    if args.limit:
        rows = rows[:: max(1, len(rows) // args.limit)]
    m = HFModel(resolve_model(args.model), args.threads)
    report = run_probe_loso(m, rows, tuple(args.max_error or MAX_ERRORS))
    write_probe_loso_report(args.out, report)
    print(json.dumps({g: {"auroc": r["auroc"], "meets_target": r["meets_target"]}
                      for g, r in report["sources"].items()}, indent=2))
    return 0


def _eval(args: argparse.Namespace) -> int:
    from vsteer.model import resolve_model
    from vsteer.probe.evaluate import run_probe_eval
    from vsteer.vector_cli import default_artifacts

    if args.loso:
        return _eval_loso(args)
    if not args.probe or not args.questions:
        raise SystemExit("eval probe needs --probe and --questions (or --loso LABELLED)")
    report = run_probe_eval(resolve_model(args.model), args.artifacts or default_artifacts(),
                            args.probe, args.questions, args.out, args.limit, args.dtype)
    print(json.dumps({k: report[k] for k in ("auroc", "threshold", "base_accuracy",
                                             "abstain", "mitigate")}, indent=2))
    return 0
