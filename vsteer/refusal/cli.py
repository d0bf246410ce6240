"""`vsteer refusal extract | calibrate | train-controller` (offline, transformers fp32)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from vsteer.refusal.data import default_set, load_prompts


def add_refusal_commands(sub: argparse._SubParsersAction) -> None:
    ref = sub.add_parser("refusal", help="refusal directions, guard, controller")
    acts = ref.add_subparsers(metavar="ACTION")

    ex = acts.add_parser("extract", help="extract a refusal direction and pick its layer")
    _common(ex)
    ex.add_argument("--name", required=True)
    ex.add_argument("--kl-max", type=float, default=0.5,
                    help="max KL on held-out harmless prompts when the direction is ablated")
    ex.add_argument("--behaviour-prompts", type=int, default=48)
    ex.add_argument("--layers", default=None, help="candidate force layers, e.g. 6-20")
    ex.add_argument("--overwrite", action="store_true")
    ex.set_defaults(func=_extract)

    cal = acts.add_parser("calibrate", help="fit the guard's condition vectors, layer and "
                          "threshold on pooled sources, for a false-positive target")
    cal.add_argument("--model", default="default")
    cal.add_argument("--artifacts", type=Path, default=None)
    cal.add_argument("--threads", type=int, default=None)
    cal.add_argument("--direction", required=True)
    cal.add_argument("--sources", default=None,
                     help="shipped sources to calibrate on: all, none, or a comma list "
                          "(see vsteer/data/refusal/sources; default: all, or none when "
                          "--harmful/--harmless/--from are given)")
    cal.add_argument("--harmful", type=Path, default=None,
                     help="with --harmless: one more source of your prompts (JSONL)")
    cal.add_argument("--harmless", type=Path, default=None)
    cal.add_argument("--from", dest="from_files", type=Path, action="append", default=[],
                     metavar="FILE", help='your own traffic: JSONL of {"prompt": ..., '
                     '"label": "harmful"|"harmless"}; one source per file (repeatable)')
    _guard_options(cal)
    cal.set_defaults(func=_calibrate)

    tc = acts.add_parser("train-controller", help="train a weighted refusal controller")
    _common(tc)
    tc.add_argument("--direction", required=True)
    tc.add_argument("--name", required=True)
    tc.add_argument("--epochs", type=int, default=6)
    tc.add_argument("--input-layer", type=int, default=None,
                    help="default: the direction's calibrated condition layer")
    tc.add_argument("--overwrite", action="store_true")
    tc.add_argument("--gate-sources", default="all",
                    help="shipped sources whose harmless prompts calibrate the gate's "
                         "threshold (all, none, or a comma list); the held-out harmless "
                         "prompts of --harmless always do")
    _guard_options(tc)
    tc.set_defaults(func=_train_controller)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="default")
    p.add_argument("--artifacts", type=Path, default=None)
    p.add_argument("--harmful", type=Path, default=None,
                   help="JSONL of {\"prompt\": ...} (default: the shipped training set)")
    p.add_argument("--harmless", type=Path, default=None)
    p.add_argument("--threads", type=int, default=None)


def _guard_options(p: argparse.ArgumentParser) -> None:
    from vsteer.refusal.guard_fit import FPR_RULES, GUARD_KINDS

    p.add_argument("--max-fpr", type=float, default=0.05,
                   help="max share of held-out harmless prompts the guard may flag")
    p.add_argument("--fpr-rule", choices=FPR_RULES, default="worst-source",
                   help="worst-source: the target holds on each source; pooled: on their mix")
    p.add_argument("--guard-kind", choices=GUARD_KINDS, default="linear",
                   help="linear: a classifier on the post-instruction tokens (transfers); "
                        "cosine: cos(last token, diff-of-means direction), the first guard")


def _setup(args: argparse.Namespace):
    from vsteer.artifacts import ArtifactStore, ModelFingerprint
    from vsteer.model import resolve_model
    from vsteer.refusal.hf_model import HFModel
    from vsteer.vector_cli import default_artifacts

    model_dir = resolve_model(args.model)
    m = HFModel(model_dir, args.threads)
    fp = ModelFingerprint.from_hf_config(m.model.config)
    harmful = load_prompts(args.harmful or default_set("harmful", "train"))
    harmless = load_prompts(args.harmless or default_set("harmless", "train"))
    return m, fp, ArtifactStore(args.artifacts or default_artifacts()), harmful, harmless


def _extract(args: argparse.Namespace) -> int:
    from vsteer.extract import parse_layers
    from vsteer.refusal.extract import extract_direction

    m, fp, store, harmful, harmless = _setup(args)
    layers = parse_layers(args.layers, m.num_layers) if args.layers else None
    d = extract_direction(m, fp, harmful, harmless, args.kl_max, args.behaviour_prompts,
                          layers)
    path = store.save("direction", args.name, d, args.overwrite)
    rates = d.scores["induced_refusal_rate"]
    print(json.dumps({"direction": args.name, "path": str(path), "layer": d.layer,
                      "induced_refusal_rate": rates[str(d.layer)],
                      "ablation_kl": d.scores["ablation_kl"][str(d.layer)]}))
    return 0


def _load_direction(store, name: str):
    from vsteer.artifacts import ArtifactError

    try:
        return store.get("direction", name)
    except KeyError:
        raise SystemExit(f"no direction {name!r} in {store.root}") from None
    except ArtifactError as e:
        raise SystemExit(f"direction {name!r} is unusable: {e}") from None


def _calibrate(args: argparse.Namespace) -> int:
    from vsteer.artifacts import ArtifactStore
    from vsteer.model import resolve_model
    from vsteer.refusal.calibrate import calibrate_from_sources
    from vsteer.refusal.hf_model import HFModel
    from vsteer.refusal.sources import PromptSource, labelled_file, pick, shipped_sources
    from vsteer.vector_cli import default_artifacts

    given = bool(args.harmful or args.harmless or args.from_files)
    spec = args.sources or ("none" if given else "all")
    names = None if spec == "all" else [] if spec == "none" else spec.split(",")
    sources = [] if names == [] else list(pick(shipped_sources(with_test_split=False),
                                                names).values())
    if args.harmful or args.harmless:
        if not (args.harmful and args.harmless):
            raise SystemExit("--harmful and --harmless go together")
        sources.append(PromptSource("given", load_prompts(args.harmful),
                                    load_prompts(args.harmless)))
    sources += [labelled_file(f) for f in args.from_files]
    if not sources:
        raise SystemExit("nothing to calibrate on: give --sources or --from FILE")
    store = ArtifactStore(args.artifacts or default_artifacts())
    stored = _load_direction(store, args.direction)
    m = HFModel(resolve_model(args.model), args.threads)
    d = calibrate_from_sources(m, stored.value, sources, args.max_fpr, args.fpr_rule,
                               args.guard_kind)
    store.save("direction", args.direction, d, overwrite=True)
    cal = d.calibration
    assert cal is not None
    print(json.dumps({"direction": args.direction, "condition_layer": cal.condition_layer,
                      "threshold": cal.threshold, "max_fpr": args.max_fpr,
                      "fpr_rule": args.fpr_rule, "guard_kind": cal.kind,
                      "calibrated_on": cal.scores["calibrated_on"]}))
    return 0


def _train_controller(args: argparse.Namespace) -> int:
    from vsteer.refusal.controller_train import train_controller

    m, fp, store, harmful, harmless = _setup(args)
    stored = _load_direction(store, args.direction)
    ctrl = train_controller(m, fp, stored.value, args.direction, stored.sha256, harmful,
                            harmless, args.input_layer, epochs=args.epochs)
    ctrl = _calibrate_gate(m, ctrl, harmless, args)
    path = store.save("controller", args.name, ctrl, args.overwrite)
    last = ctrl.scores["history"][-1]
    print(json.dumps({"controller": args.name, "path": str(path),
                      "input_layer": ctrl.input_layer, "threshold": ctrl.threshold, **last}))
    return 0


def _calibrate_gate(m, ctrl, harmless: list[str], args: argparse.Namespace):
    """The gate's threshold for --max-fpr over harmless prompts of several sources."""
    import numpy as np

    from vsteer.refusal.calibrate import last_token_states
    from vsteer.refusal.data import split_fit_heldout
    from vsteer.refusal.gate_fit import calibrate_gate
    from vsteer.refusal.sources import pick, shipped_sources

    sets = {"given": split_fit_heldout(harmless)[1]}
    if args.gate_sources != "none":
        names = None if args.gate_sources == "all" else args.gate_sources.split(",")
        sets |= {n: s.harmless for n, s in pick(shipped_sources(with_test_split=False),
                                                 names).items() if s.harmless}
    seen = set(harmless) - set(sets["given"])  # the gate was fit on these
    prompts, src = [], []
    for name, ps in sets.items():
        ps = [p for p in ps if p not in seen]
        prompts += ps
        src += [name] * len(ps)
    x = last_token_states(m, prompts, [ctrl.input_layer])[:, 0].numpy()
    return calibrate_gate(ctrl, x, np.array(src), args.max_fpr, args.fpr_rule)


def add_refusal_eval(evals: argparse._SubParsersAction) -> None:
    ev = evals.add_parser("refusal", help="refusal rates of base/force/guard/controller/ablate")
    ev.add_argument("--model", default="default")
    ev.add_argument("--artifacts", type=Path, default=None)
    ev.add_argument("--direction", required=True)
    ev.add_argument("--controller", default=None)
    ev.add_argument("--harmful", type=Path, default=None,
                    help="held-out harmful prompts (default: the shipped test set)")
    ev.add_argument("--harmless", type=Path, default=None)
    ev.add_argument("--limit", type=int, default=None, help="use the first N of each set")
    ev.add_argument("--dtype", default="float32")
    ev.add_argument("--out", type=Path, required=True)
    ev.add_argument("--loso", action="store_true",
                    help="left-one-source-out: refit the guard without each shipped source "
                         "and test it on that source")
    ev.add_argument("--sources", default="all", help="with --loso: all or a comma list")
    ev.add_argument("--threads", type=int, default=None)
    _guard_options(ev)
    ev.set_defaults(func=_eval)


def _eval_loso(args: argparse.Namespace) -> int:
    from vsteer.artifacts import ArtifactStore
    from vsteer.model import resolve_model
    from vsteer.refusal.hf_model import HFModel
    from vsteer.refusal.loso import run_loso
    from vsteer.refusal.loso_report import write_loso_report
    from vsteer.refusal.sources import pick, shipped_sources
    from vsteer.vector_cli import default_artifacts

    store = ArtifactStore(args.artifacts or default_artifacts())
    base = _load_direction(store, args.direction)
    ctrl = None
    if args.controller:
        try:
            ctrl = (args.controller, store.get("controller", args.controller).value)
        except KeyError:
            raise SystemExit(f"no controller {args.controller!r} in {store.root}") from None
    names = None if args.sources == "all" else args.sources.split(",")
    sources = list(pick(shipped_sources(), names).values())
    if args.limit:
        sources = [type(s)(s.name, s.harmful[:args.limit], s.harmless[:args.limit])
                   for s in sources]
    model = resolve_model(args.model)
    m = HFModel(model, args.threads)
    report = run_loso(model, m, sources, base, args.direction, args.out, args.max_fpr,
                      args.fpr_rule, args.dtype, ctrl, args.guard_kind)
    write_loso_report(args.out, report)
    print(json.dumps({n: {"harmful_gain": r.get("harmful", {}).get("gain"),
                          "harmless_gain": r.get("harmless", {}).get("gain"),
                          "meets_target": r["meets_target"]}
                      for n, r in report["sources"].items()}, indent=2))
    return 0


def _eval(args: argparse.Namespace) -> int:
    if args.loso:
        return _eval_loso(args)
    from vsteer.artifacts import ArtifactStore
    from vsteer.model import resolve_model
    from vsteer.refusal.evaluate import RefusalEval, modes_for, summarize, write_report
    from vsteer.vector_cli import default_artifacts

    artifacts = args.artifacts or default_artifacts()
    store = ArtifactStore(artifacts)
    d = _load_direction(store, args.direction).value
    sets = {"harmful": load_prompts(args.harmful or default_set("harmful", "test")),
            "harmless": load_prompts(args.harmless or default_set("harmless", "test"))}
    if args.limit:
        sets = {k: v[:args.limit] for k, v in sets.items()}
    model = resolve_model(args.model)
    ev = RefusalEval(model, artifacts, args.dtype)
    report: dict = {"model_name": Path(model).name, "direction": args.direction,
                    "controller": args.controller, "layer": d.layer,
                    "sizes": {k: len(v) for k, v in sets.items()}, "modes": {}}
    samples = []
    try:
        for mode, control in modes_for(args.direction, d.calibration is not None,
                                       args.controller).items():
            rows = {k: ev.run(v, control, f"{mode} / {k}") for k, v in sets.items()}
            report["modes"][mode] = summarize(rows)
            samples += [{"mode": mode, "set": k, **r} for k, rs in rows.items() for r in rs]
    finally:
        ev.close()
    write_report(args.out, report, samples)
    print(json.dumps(report["modes"]))
    return 0
