"""Does a tuned lens make early exit pay on this model? Offline, in transformers (fp32).

    python bench/tuned_lens.py --out bench/results/early_exit/tuned_lens  # ~10 min, 2 cores

Corpus: the model's own greedy answers to the 64 shipped prompts (`vsteer exit train`'s
corpus, answered through the engine unless --corpus gives one), split by answer into
fit / cal / test as `vsteer exit train` splits it. For each candidate layer:
    agreement   share of test tokens whose lens token equals the full model's token,
                for the logit lens (final norm + LM head) and the tuned lens
                (vsteer/early_exit/tuned_lens.py, fit on the fit split)
    cascade     exit at the first candidate layer whose lens softmax confidence reaches
                a threshold calibrated on the cal split for a 98% agreement target;
                on test: share of tokens exited, layer compute saved, agreement, and
                the projected decode speed-up under `vsteer exit train`'s cost model
                (a skipped layer still costs FILL_COST for its K/V; each check
                CHECK_COST of a layer)
The softmax confidence is the strongest exit score available (it needs an LM-head
product per check); the linear predictor the runtime uses is weaker. So the cascade
here is an upper bound for what a runtime with the same lens would reach.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent.parent))

LAYERS = [3, 10, 15, 20, 24, 26, 28]
TARGET = 0.98


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="default")
    ap.add_argument("--corpus", type=Path, default=None)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--max-tokens", type=int, default=96)
    ap.add_argument("--limit", type=int, default=None, help="first N prompts (smoke)")
    args = ap.parse_args()

    from vsteer.early_exit import corpus as cp
    from vsteer.early_exit.train import (
        CHECK_COST,
        FILL_COST,
        calibrate,
        cascade,
        net_saving,
        split_of,
    )
    from vsteer.early_exit.tuned_lens import collect, fit_layer, read
    from vsteer.model import resolve_model
    from vsteer.refusal.hf_model import HFModel

    model = resolve_model(args.model)
    rows = cp.read_corpus(args.corpus) if args.corpus else cp.shipped_prompts()
    rows = rows[: args.limit] if args.limit else rows
    rows = cp.answer_missing(model, rows, args.max_tokens)
    m = HFModel(model)
    seqs = cp.to_sequences(m.tok, rows)
    data = collect(m, seqs, LAYERS)
    split = np.array([split_of(int(s)) for s in data.seq])
    full = data.full_tok.numpy()
    n_l = m.num_layers
    result: dict = {"tokens": {k: int((split == k).sum()) for k in ("fit", "cal", "test")},
                    "layers": LAYERS, "target": TARGET, "lenses": {}}
    for name in ("logit", "tuned"):
        agree = np.zeros((len(full), len(LAYERS)), bool)
        conf = np.zeros((len(full), len(LAYERS)))
        for k, la in enumerate(LAYERS):
            a = b = None
            if name == "tuned":
                fit = np.nonzero(split == "fit")[0]
                a, b = fit_layer(m, data.x[la][fit], data.full_logp[fit], args.steps)
            tok, c = read(m, data.x[la], a, b)
            agree[:, k] = tok.numpy() == full
            conf[:, k] = c.numpy()
        cal, test = split == "cal", split == "test"
        thr = np.array([calibrate(conf[cal, k], agree[cal, k], TARGET)
                        for k in range(len(LAYERS))])
        run = cascade(conf[test], agree[test], thr, LAYERS, n_l)
        saved = net_saving(conf[test], thr, LAYERS, n_l)
        result["lenses"][name] = {
            "agreement_by_layer": {str(la): float(agree[test, k].mean())
                                   for k, la in enumerate(LAYERS)},
            "thresholds": thr.tolist(), **run,
            "net_layers_saved": saved, "projected_speedup": n_l / max(n_l - saved, 1e-9)}
        print(name, json.dumps(result["lenses"][name]), flush=True)
    result["cost_model"] = {"fill_cost": FILL_COST, "check_cost": CHECK_COST}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "report.json").write_text(json.dumps(result, indent=2) + "\n")
    _plot(args.out / "agreement_by_layer.png", result)
    return 0


def _plot(path: Path, result: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    for name, r in result["lenses"].items():
        ax.plot(result["layers"], [r["agreement_by_layer"][str(la)] for la in result["layers"]],
                marker="o", label=f"{name} lens")
    ax.axhline(result["target"], color="grey", ls=":", label=f"{result['target']:.0%}")
    ax.set_xlabel("exit layer")
    ax.set_ylabel("lens token == full model's token (test)")
    ax.set_ylim(0, 1)
    ax.set_title("Early-exit read-out: logit lens vs tuned lens")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
