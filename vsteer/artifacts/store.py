"""The artifact directory: one safetensors file per artifact, shared by all workers.

Layout: `<root>/<kind>/<name>.safetensors`. Writes go to a temp file in the same
directory and are renamed into place, so readers (other processes, other replicas on
a shared volume) see either the old file or the whole new one. Reads always go to
disk (cached by mtime and size), so an artifact written by another process is seen
on the next request.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vsteer.artifacts.controller import RefusalController
from vsteer.artifacts.direction import RefusalDirection
from vsteer.artifacts.exit_predictor import ExitPredictor
from vsteer.artifacts.expert_set import ExpertSet
from vsteer.artifacts.probe import HallucinationProbe
from vsteer.artifacts.sae import SparseAutoencoder
from vsteer.artifacts.tensors_file import ArtifactError, read_safetensors_metadata
from vsteer.artifacts.vector import SteeringVector

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
MAX_ARTIFACT_BYTES = 256 * 1024 * 1024


def check_name(name: str) -> str:
    if not isinstance(name, str) or not NAME_RE.match(name) or ".." in name:
        raise ArtifactError(
            f"invalid artifact name {name!r}: use 1-128 of [A-Za-z0-9._-], "
            "starting with a letter or digit"
        )
    return name


def read_verified(path: str | os.PathLike[str], sha256: str) -> bytes:
    """A file's bytes, if they still hash to what the server validated (workers load
    artifacts by path; a file replaced in between is refused, never half-used)."""
    data = Path(path).read_bytes()
    if hashlib.sha256(data).hexdigest() != sha256:
        raise ArtifactError(f"{path} changed after the request was validated")
    return data


@dataclass(frozen=True)
class StoredVector:
    name: str
    path: Path
    sha256: str
    vector: SteeringVector


@dataclass(frozen=True)
class Stored:
    """Any artifact as loaded from the store: its file, content hash and value."""

    name: str
    path: Path
    sha256: str
    value: Any


PARSERS: dict[str, Callable[[bytes], Any]] = {
    "vector": SteeringVector.from_safetensors_bytes,
    "direction": RefusalDirection.from_safetensors_bytes,
    "controller": RefusalController.from_safetensors_bytes,
    "probe": HallucinationProbe.from_safetensors_bytes,
    "exit": ExitPredictor.from_safetensors_bytes,
    "sae": SparseAutoencoder.from_safetensors_bytes,
    "experts": ExpertSet.from_safetensors_bytes,
}


class ArtifactStore:
    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self._cache: dict[Path, tuple[tuple[int, int], Stored]] = {}

    def path(self, kind: str, name: str) -> Path:
        return self.root / kind / f"{check_name(name)}.safetensors"

    def names(self, kind: str) -> list[str]:
        d = self.root / kind
        if not d.is_dir():
            return []
        return sorted(p.name[: -len(".safetensors")] for p in d.glob("*.safetensors")
                      if NAME_RE.match(p.name[: -len(".safetensors")]))

    def write_bytes(self, kind: str, name: str, data: bytes, overwrite: bool = False) -> Path:
        if len(data) > MAX_ARTIFACT_BYTES:
            raise ArtifactError(f"artifact is larger than {MAX_ARTIFACT_BYTES} bytes")
        target = self.path(kind, name)
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists() and not overwrite:
            raise FileExistsError(f"{kind} {name!r} already exists")
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=target.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            if overwrite:
                os.replace(tmp, target)
            else:
                # link() fails if the name appeared meanwhile: no silent overwrite race.
                os.link(tmp, target)
                os.unlink(tmp)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        return target

    def delete(self, kind: str, name: str) -> bool:
        try:
            self.path(kind, name).unlink()
            return True
        except FileNotFoundError:
            return False

    # -- vectors ------------------------------------------------------------------------
    def save_vector(self, name: str, vector: SteeringVector, overwrite: bool = False) -> Path:
        return self.write_bytes("vector", name, vector.to_safetensors_bytes(), overwrite)

    def get_vector(self, name: str) -> StoredVector:
        """Load and validate a vector; raises KeyError if absent, ArtifactError if bad."""
        s = self.get("vector", name)
        return StoredVector(s.name, s.path, s.sha256, s.value)

    def get(self, kind: str, name: str) -> Stored:
        """Load and validate any artifact; KeyError if absent, ArtifactError if bad."""
        path = self.path(kind, name)
        try:
            st = path.stat()
        except FileNotFoundError:
            raise KeyError(name) from None
        key = (st.st_mtime_ns, st.st_size)
        hit = self._cache.get(path)
        if hit is not None and hit[0] == key:
            return hit[1]
        data = path.read_bytes()
        stored = Stored(name, path, hashlib.sha256(data).hexdigest(), PARSERS[kind](data))
        self._cache[path] = (key, stored)
        return stored

    def save(self, kind: str, name: str, value: Any, overwrite: bool = False) -> Path:
        return self.write_bytes(kind, name, value.to_safetensors_bytes(), overwrite)

    def vector_info(self, name: str) -> dict:
        path = self.path("vector", name)
        data = path.read_bytes()
        meta = read_safetensors_metadata(data)
        return {"name": name, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest(),
                **meta}
