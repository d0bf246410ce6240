"""Artifacts: value types and the shared on-disk store."""

from vsteer.artifacts.fingerprint import ModelFingerprint
from vsteer.artifacts.store import ArtifactStore, StoredVector, check_name
from vsteer.artifacts.vector import ArtifactError, SteeringVector

__all__ = [
    "ArtifactError",
    "ArtifactStore",
    "ModelFingerprint",
    "SteeringVector",
    "StoredVector",
    "check_name",
]
