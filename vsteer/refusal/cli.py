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

    cal = acts.add_parser("calibrate", help="pick the guard's condition layer and threshold")
    _common(cal)
    cal.add_argument("--direction", required=True)
    cal.add_argument("--max-fpr", type=float, default=0.05,
                     help="max share of held-out harmless prompts the guard may flag")
    cal.set_defaults(func=_calibrate)

    tc = acts.add_parser("train-controller", help="train a weighted refusal controller")
    _common(tc)
    tc.add_argument("--direction", required=True)
    tc.add_argument("--name", required=True)
    tc.add_argument("--epochs", type=int, default=6)
    tc.add_argument("--input-layer", type=int, default=None,
                    help="default: the direction's calibrated condition layer")
    tc.add_argument("--overwrite", action="store_true")
    tc.set_defaults(func=_train_controller)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="default")
    p.add_argument("--artifacts", type=Path, default=None)
    p.add_argument("--harmful", type=Path, default=None,
                   help="JSONL of {\"prompt\": ...} (default: the shipped training set)")
    p.add_argument("--harmless", type=Path, default=None)
    p.add_argument("--threads", type=int, default=None)


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
    from vsteer.refusal.calibrate import calibrate_guard

    m, _fp, store, harmful, harmless = _setup(args)
    stored = _load_direction(store, args.direction)
    cal = calibrate_guard(m, stored.value, harmful, harmless, args.max_fpr)
    store.save("direction", args.direction, stored.value.with_calibration(cal), overwrite=True)
    print(json.dumps({"direction": args.direction, "condition_layer": cal.condition_layer,
                      "threshold": cal.threshold, "f1": cal.f1}))
    return 0


def _train_controller(args: argparse.Namespace) -> int:
    from vsteer.refusal.controller_train import train_controller

    m, fp, store, harmful, harmless = _setup(args)
    stored = _load_direction(store, args.direction)
    ctrl = train_controller(m, fp, stored.value, args.direction, stored.sha256, harmful,
                            harmless, args.input_layer, epochs=args.epochs)
    path = store.save("controller", args.name, ctrl, args.overwrite)
    last = ctrl.scores["history"][-1]
    print(json.dumps({"controller": args.name, "path": str(path),
                      "input_layer": ctrl.input_layer, **last}))
    return 0


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
    ev.set_defaults(func=_eval)


def _eval(args: argparse.Namespace) -> int:
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
