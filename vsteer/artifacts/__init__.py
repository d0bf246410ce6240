"""Artifacts: value types and the shared on-disk store."""

from vsteer.artifacts.controller import RefusalController
from vsteer.artifacts.direction import GuardCalibration, RefusalDirection
from vsteer.artifacts.exit_predictor import ExitPredictor
from vsteer.artifacts.fingerprint import ModelFingerprint
from vsteer.artifacts.probe import HallucinationProbe
from vsteer.artifacts.store import (
    ArtifactStore,
    Stored,
    StoredVector,
    check_name,
    read_verified,
)
from vsteer.artifacts.tensors_file import ArtifactError
from vsteer.artifacts.vector import SteeringVector

__all__ = [
    "ArtifactError",
    "ArtifactStore",
    "ExitPredictor",
    "GuardCalibration",
    "HallucinationProbe",
    "RefusalController",
    "RefusalDirection",
    "Stored",
    "ModelFingerprint",
    "SteeringVector",
    "StoredVector",
    "check_name",
    "read_verified",
]
