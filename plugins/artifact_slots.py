"""What a steering slot holds, read from a stored artifact (the worker trusts the
server's resolution but checks each file's content hash and model fingerprint)."""

from __future__ import annotations

import numpy as np

from vsteer.artifacts import (
    ArtifactError,
    HallucinationProbe,
    ModelFingerprint,
    RefusalDirection,
    SteeringVector,
    read_verified,
)
from vsteer.plugins import faults


def slot_contents(path: str, sha256: str, part: str, layers: list[int],
                  fingerprint: ModelFingerprint, tp_rank: int = 0) -> dict[int, np.ndarray]:
    """Slot contents, layer -> [H]: a vector file (part ""), a probe's truth tensors
    ("truth"), a direction's per-layer refusal tensors ("refusal"), or its layer-l
    tensor at every layer ("refusal@l"). Raises ArtifactError (or OSError)."""
    faults.maybe_fail_load(path, tp_rank)
    data = read_verified(path, sha256)
    if not part:
        value = SteeringVector.from_safetensors_bytes(data)
        src = value.directions
    elif part == "truth":
        value = HallucinationProbe.from_safetensors_bytes(data)
        src = dict(enumerate(value.truth))
    else:
        value = RefusalDirection.from_safetensors_bytes(data)
        if part == "refusal":
            src = value.refusal
        else:
            fixed = value.refusal[int(part.split("@", 1)[1])]
            src = dict.fromkeys(range(fingerprint.num_layers), fixed)
    if (why := value.fingerprint.mismatch(fingerprint)) is not None:
        raise ArtifactError(why)
    return {la: src[la] for la in layers if la in src}
