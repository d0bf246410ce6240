"""Random steering vectors (one per request) for the overhead benchmarks."""

from __future__ import annotations

import tempfile

import numpy as np

from vsteer.artifacts import ArtifactStore, ModelFingerprint, SteeringVector
from vsteer.wire import WireSpec, encode, steer_entry


def save_random_vectors(store: ArtifactStore, fp: ModelFingerprint, names: list[str],
                        norm_per_dim: float = 0.1, seed: int = 0) -> None:
    """Save one random vector on every layer under each of `names` (in order, from one
    generator seeded with `seed`)."""
    rng = np.random.default_rng(seed)
    for name in names:
        dirs = {la: (rng.standard_normal(fp.hidden_size) * norm_per_dim).astype(np.float32)
                for la in range(fp.num_layers)}
        store.save_vector(name, SteeringVector(dirs, fp, method="random"), overwrite=True)


def random_steer_specs(fp: ModelFingerprint, count: int, scale: float,
                       norm_per_dim: float = 0.1) -> list[str]:
    """`count` encoded specs, each adding its own random vector on every layer."""
    store = ArtifactStore(tempfile.mkdtemp(prefix="vsteer-bench-"))
    names = [f"v{i}" for i in range(count)]
    save_random_vectors(store, fp, names, norm_per_dim)
    specs = []
    for i, name in enumerate(names):
        s = store.get_vector(name)
        entry = steer_entry(name, s.sha256, str(s.path), s.vector.layers, scale)
        specs.append(encode(WireSpec(rid=f"bench{i}", steer=[entry])))
    return specs
