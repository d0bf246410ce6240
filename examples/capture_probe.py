"""Train a probe from activations captured through the API (`control.capture`).

Sends harmful and harmless prompts from vsteer's shipped sets to a running server, takes
the residual stream at the last prompt token of one layer from each response, fits a
linear probe on half of them (the difference of the class means, the direction
refusal work extracts, then a 1-D logistic fit for a probability; plain numpy) and
prints its AUROC on the other half. Needs only the server and the openai SDK:

    python examples/capture_probe.py --url http://127.0.0.1:8000/v1 --layer 12 --n 40
"""

from __future__ import annotations

import argparse
import base64
import json
import random

import numpy as np
from openai import OpenAI

from vsteer.refusal.data import default_set, load_prompts


def capture_last(client: OpenAI, model: str, prompt: str, layer: int) -> np.ndarray:
    r = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": prompt}], max_tokens=1,
        temperature=0,
        extra_body={"control": {"capture": {"layers": [layer], "positions": "last"}}})
    cap = r.model_extra["control"]["capture"]
    return np.frombuffer(base64.b64decode(cap["data"]), "<f4").reshape(cap["shape"])[0, 0]


def fit_probe(x: np.ndarray, y: np.ndarray, steps: int = 500):
    """A function x [n, H] -> p(harmful): sigmoid(a * z + b) with z the standardized
    projection on d, the unit difference of the class means (robust with a few dozen
    examples); a and b by gradient descent."""
    d = x[y == 1].mean(0) - x[y == 0].mean(0)
    d /= np.linalg.norm(d)
    mu, sd = float((x @ d).mean()), float((x @ d).std()) + 1e-6
    z = (x @ d - mu) / sd
    a, b = 1.0, 0.0
    for _ in range(steps):
        p = 1 / (1 + np.exp(-(a * z + b)))
        a -= 0.5 * float(np.mean((p - y) * z))
        b -= 0.5 * float(np.mean(p - y))
    return lambda v: 1 / (1 + np.exp(-(a * (v @ d - mu) / sd + b)))


def auroc(scores: np.ndarray, y: np.ndarray) -> float:
    pos, neg = scores[y == 1], scores[y == 0]
    return float((pos[:, None] > neg[None, :]).mean() + 0.5 * (pos[:, None] == neg[None, :]).mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", default="http://127.0.0.1:8000/v1")
    ap.add_argument("--key", default="none")
    ap.add_argument("--model", default="SmolLM2-135M-Instruct")
    ap.add_argument("--layer", type=int, default=12)
    ap.add_argument("--n", type=int, default=40, help="prompts per class")
    args = ap.parse_args()
    client = OpenAI(base_url=args.url, api_key=args.key)
    harmful = load_prompts(default_set("harmful", "train"))[:args.n]
    harmless = load_prompts(default_set("harmless", "train"))[:args.n]
    x = np.stack([capture_last(client, args.model, p, args.layer) for p in harmful + harmless])
    y = np.array([1] * len(harmful) + [0] * len(harmless))
    order = list(range(len(y)))
    random.Random(0).shuffle(order)
    train, test = order[: len(order) // 2], order[len(order) // 2:]
    probe = fit_probe(x[train], y[train])
    score = probe(x[test])
    print(json.dumps({"layer": args.layer, "train": len(train), "test": len(test),
                      "hidden": int(x.shape[1]), "test_auroc": round(auroc(score, y[test]), 3)}))


if __name__ == "__main__":
    main()
