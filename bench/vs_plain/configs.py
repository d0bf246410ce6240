"""The shape every run shares, the five configurations, and the artifacts they use."""

from __future__ import annotations

import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vs_plain.common import HERE, log

SHARED_VECTOR = "bench-shared"
DISTINCT_PREFIX = "bench-req"


@dataclass(frozen=True)
class Shape:
    """What every client run sends, and the engine settings both servers share."""
    num_prompts: int
    input_len: int
    output_len: int
    dtype: str
    max_model_len: int
    max_num_seqs: int
    scale: float


@dataclass(frozen=True)
class Config:
    key: str
    label: str
    server: str  # "plain" | "vsteer"
    control: dict[str, Any] | None = None  # one control object for every request
    per_request: list[dict[str, Any]] | None = None  # or one per request, in order


@dataclass(frozen=True)
class Artifacts:
    root: Path
    shared: str
    distinct: list[str]
    direction: str
    probe: str


def make_artifacts(model_dir: Path, root: Path, count: int, guard: bool = True
                   ) -> Artifacts:
    """Random vectors (one shared, `count` distinct), and with `guard` a calibrated
    refusal direction and a hallucination probe with a per-token probe; ones already in
    `root` are kept."""
    sys.path.insert(0, str(HERE))
    sys.path.insert(0, str(HERE.parent / "tests"))
    from random_vectors import save_random_vectors
    from transformers import AutoConfig

    from vsteer.artifacts import ArtifactStore, ModelFingerprint

    from conftest import PROBE, make_probe_artifacts, make_refusal_artifacts

    store = ArtifactStore(root)
    fp = ModelFingerprint.from_hf_config(AutoConfig.from_pretrained(model_dir))
    distinct = [f"{DISTINCT_PREFIX}{i}" for i in range(count)]
    have = set(store.names("vector"))
    if not {SHARED_VECTOR, *distinct} <= have:
        save_random_vectors(store, fp, [SHARED_VECTOR, *distinct])
    if not guard:
        return Artifacts(root, SHARED_VECTOR, distinct, "refusal", PROBE)
    work = Path(tempfile.mkdtemp(prefix="vs-plain-data-"))
    try:
        if "refusal" not in store.names("direction"):
            log(f"making refusal direction 'refusal' in {root} (vsteer refusal extract + "
                "calibrate)")
            make_refusal_artifacts(model_dir, root, work, controller=False)
        if PROBE not in store.names("probe"):
            log(f"making hallucination probe '{PROBE}' in {root} (vsteer probe dataset + "
                "train)")
            make_probe_artifacts(model_dir, root, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return Artifacts(root, SHARED_VECTOR, distinct, "refusal", PROBE)


def configurations(art: Artifacts, scale: float) -> list[Config]:
    def steer(name: str) -> dict[str, Any]:
        return {"steer": [{"vector": name, "scale": scale}]}

    return [
        Config("plain", "plain vLLM", "plain"),
        Config("bare", "vsteer, no control", "vsteer"),
        Config("shared", "vsteer, one shared vector, all layers", "vsteer",
               control=steer(art.shared)),
        Config("distinct", "vsteer, a distinct vector per request, all layers", "vsteer",
               per_request=[steer(n) for n in art.distinct]),
        Config("guarded", "vsteer, refusal guard + per-token hallucination probe", "vsteer",
               control={"refusal": {"mode": "guard", "direction": art.direction},
                        "hallucination": {"probe": art.probe, "per_token": True}}),
        # the same cost taken apart
        Config("guard", "vsteer, refusal guard", "vsteer",
               control={"refusal": {"mode": "guard", "direction": art.direction}}),
        Config("probe", "vsteer, hallucination probe (pre-decoding score only)", "vsteer",
               control={"hallucination": {"probe": art.probe}}),
        Config("per_token", "vsteer, hallucination probe with per-token scores", "vsteer",
               control={"hallucination": {"probe": art.probe, "per_token": True}}),
    ]


NEEDS_GUARD_ARTIFACTS = frozenset({"guarded", "guard", "probe", "per_token"})
