"""Does the model's own first-token uncertainty, stacked with the hidden-state probe,
transfer across QA sources? Left-one-source-out, offline (issue 16; a negative result
recorded in bench/RESULTS.md).

    python bench/probe_uncertainty_stack.py QA.jsonl CACHE.npz MODEL_DIR

QA.jsonl: `vsteer probe dataset --sources all`. Features come from transformers fp32
(vsteer/probe/features.py) and are cached in CACHE.npz. Per held-out source: the probe
(layer/pooling by left-one-source-out AUROC among the training sources, as `vsteer
probe train` picks), the first answer token's entropy (no training), a logistic on
the uncertainty features, and a logistic stacked on [probe out-of-fold logit, entropy,
1 - max p, -margin], all fit on the other sources only. Writes CACHE.npz.json.

The first answer token's distribution is known at the end of prefill, so it is a
pre-decoding signal like the probe.
"""
import json
import sys
import time

import numpy as np
import torch

from vsteer.probe.features import extract_features
from vsteer.probe.metrics import auroc
from vsteer.probe.train import fit_logistic, linear_scores, row_sources
from vsteer.refusal.hf_model import HFModel

rows = [json.loads(x) for x in open(sys.argv[1])]
cache = sys.argv[2]
t0 = time.time()
try:
    d = np.load(cache)
    mean, last, unc = d["mean"], d["last"], d["unc"]
except FileNotFoundError:
    m = HFModel(sys.argv[3], threads=2)
    f = extract_features(m, rows, [m.num_layers - 1])
    mean, last = f.mean, f.last
    with torch.no_grad():
        h = torch.from_numpy(last[:, -1])
        logits = m.model.lm_head(m.model.model.norm(h)).double()  # [N, V]
        lp = torch.log_softmax(logits, -1)
        p = lp.exp()
        ent = -(p * lp).sum(-1)
        top = lp.topk(2, -1).values
        unc = torch.stack([ent, 1 - top[:, 0].exp(), -(top[:, 0] - top[:, 1])], 1).numpy()
    np.savez(cache, mean=mean, last=last, unc=unc)
print(f"features {time.time() - t0:.0f}s", flush=True)

y = np.array([0.0 if r["correct"] else 1.0 for r in rows])
groups = row_sources(rows)
names = sorted(set(groups.tolist()))
feats = {"mean": mean, "last": last}
CANDS = [(p, la) for p in ("last", "mean") for la in (9, 13, 15, 17, 19, 21)]
L2 = 300.0


def logit(s):
    s = np.clip(s, 1e-9, 1 - 1e-9)
    return np.log(s / (1 - s))


res = {}
for g in names:
    tr = groups != g
    te = ~tr
    inner = [h for h in names if h != g and len(np.unique(y[groups == h])) == 2]
    best, best_score, best_oof = None, -1, None
    for c in CANDS:
        x = feats[c[0]][:, c[1]]
        oof = np.full(len(y), np.nan)
        aucs = []
        for h in [h for h in names if h != g]:
            t = groups == h
            w, b = fit_logistic(x[tr & ~t], y[tr & ~t], L2)
            oof[t] = logit(linear_scores(x[t], w, b))
            if h in inner:
                aucs.append(auroc(oof[t], y[t]))
        if np.mean(aucs) > best_score:
            best, best_score, best_oof = c, float(np.mean(aucs)), oof
    x = feats[best[0]][:, best[1]]
    w, b = fit_logistic(x[tr], y[tr], L2)
    z_te = logit(linear_scores(x[te], w, b))
    # stacker on [probe out-of-fold logit, uncertainty]
    s_tr = np.column_stack([best_oof[tr], unc[tr]])
    s_te = np.column_stack([z_te, unc[te]])
    ws, bs = fit_logistic(s_tr, y[tr], 1.0)
    wu, bu = fit_logistic(unc[tr], y[tr], 1.0)
    out = {"n": int(te.sum()), "err": float(y[te].mean()), "cand": best,
           "probe": auroc(z_te, y[te]),
           "entropy": auroc(unc[te, 0], y[te]),
           "unc_lr": auroc(linear_scores(unc[te], wu, bu), y[te]),
           "stack": auroc(linear_scores(s_te, ws, bs), y[te]),
           "stack_w": [round(float(v), 3) for v in ws]}
    res[g] = out
    print(g, json.dumps(out), flush=True)
json.dump(res, open(cache + ".json", "w"), indent=1)
