"""Random steering vectors (one per request) for the overhead benchmarks."""

from __future__ import annotations

import tempfile

import numpy as np

from vsteer.artifacts import ArtifactStore, ModelFingerprint, SteeringVector
from vsteer.wire import WireSpec, encode, steer_entry


def random_steer_specs(fp: ModelFingerprint, count: int, scale: float,
                       norm_per_dim: float = 0.1) -> list[str]:
    """`count` encoded specs, each adding its own random vector on every layer."""
    store = ArtifactStore(tempfile.mkdtemp(prefix="vsteer-bench-"))
    rng = np.random.default_rng(0)
    specs = []
    for i in range(count):
        dirs = {la: (rng.standard_normal(fp.hidden_size) * norm_per_dim).astype(np.float32)
                for la in range(fp.num_layers)}
        store.save_vector(f"v{i}", SteeringVector(dirs, fp, method="random"))
        s = store.get_vector(f"v{i}")
        entry = steer_entry(f"v{i}", s.sha256, str(s.path), s.vector.layers, scale)
        specs.append(encode(WireSpec(rid=f"bench{i}", steer=[entry])))
    return specs
