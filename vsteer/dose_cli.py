"""`vsteer vector calibrate`: store a vector's dose curve (vsteer/dose.py) in its artifact,
and plot it (dose.png next to the report)."""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path


def add_calibrate_command(vec: argparse._SubParsersAction) -> None:
    cal = vec.add_parser("calibrate", help="measure next-token KL and repetition over a "
                         "grid of scales, so requests can ask for \"kl\" instead of scale")
    cal.add_argument("name")
    cal.add_argument("--model", default="default")
    cal.add_argument("--artifacts", type=Path, default=None)
    cal.add_argument("--prompts", type=Path, default=None,
                     help="JSONL of {\"prompt\": ...} (default: the shipped general prompts)")
    cal.add_argument("--limit", type=int, default=32, help="prompts used (default 32)")
    cal.add_argument("--scales", default=None,
                     help="comma list, written --scales=-4,-1,0,1,4 when it starts with a minus "
                          "(default -8,-4,-2,-1,-0.5,0,0.5,1,2,4,8)")
    cal.add_argument("--gen-tokens", type=int, default=32)
    cal.add_argument("--threads", type=int, default=None)
    cal.add_argument("--report", type=Path, default=None,
                     help="where dose.json / dose.png go (default <artifacts>/reports/dose-NAME)")
    cal.set_defaults(func=_calibrate)


def _calibrate(args: argparse.Namespace) -> int:
    from importlib import resources

    from vsteer.artifacts import ArtifactStore
    from vsteer.dose import DEFAULT_SCALES, measure_dose
    from vsteer.model import resolve_model
    from vsteer.refusal.data import load_prompts
    from vsteer.refusal.hf_model import HFModel
    from vsteer.vector_cli import default_artifacts

    store = ArtifactStore(args.artifacts or default_artifacts())
    try:
        stored = store.get_vector(args.name)
    except KeyError:
        raise SystemExit(f"no vector {args.name!r} in {store.root}") from None
    path = args.prompts or Path(str(resources.files("vsteer.data").joinpath(
        "exit_prompts.jsonl")))
    prompts = load_prompts(path)[: args.limit]
    scales = (tuple(float(x) for x in args.scales.split(",")) if args.scales
              else DEFAULT_SCALES)
    curve = measure_dose(HFModel(resolve_model(args.model), args.threads), stored.vector,
                         prompts, scales, args.gen_tokens)
    vec = replace(stored.vector, provenance={**stored.vector.provenance,
                                             "dose": {**curve.to_dict(), "source": path.name}})
    store.save_vector(args.name, vec, overwrite=True)
    out = args.report or store.root / "reports" / f"dose-{args.name}"
    out.mkdir(parents=True, exist_ok=True)
    (out / "dose.json").write_text(json.dumps(curve.to_dict(), indent=2) + "\n")
    _plot(out / "dose.png", curve, args.name)
    print(json.dumps({"vector": args.name, **curve.to_dict(), "report": str(out)}))
    return 0


def _plot(path: Path, curve, name: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    ax.plot(curve.scales, curve.kl, marker="o", color="#8e44ad", label="next-token KL")
    ax.set_xlabel("scale")
    ax.set_ylabel("KL(unsteered || steered), nats")
    ax2 = ax.twinx()
    ax2.plot(curve.scales, curve.repetition, marker="x", color="#e67e22",
             label="repeated 3-grams")
    ax2.set_ylabel("share of repeated word 3-grams")
    ax2.set_ylim(0, 1)
    ax.set_title(f"Dose curve of {name} ({curve.prompts} prompts)")
    fig.legend(loc="upper center", bbox_to_anchor=(0.5, 0.88))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
