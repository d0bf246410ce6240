"""Shared safetensors plumbing for every artifact kind: parse a blob into (tensors,
metadata) with clear errors, write one, and read the common metadata fields."""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from vsteer.artifacts.fingerprint import ModelFingerprint


class ArtifactError(ValueError):
    """An artifact file or payload is invalid; the message says why."""


def read_safetensors_metadata(data: bytes) -> dict[str, str]:
    """The `__metadata__` of a safetensors blob, without parsing tensors."""
    if len(data) < 8:
        raise ArtifactError("file too short to be safetensors")
    n = int.from_bytes(data[:8], "little")
    if n > len(data) - 8 or n > 100 * 1024 * 1024:
        raise ArtifactError("safetensors header length is out of range (truncated file?)")
    try:
        header = json.loads(data[8 : 8 + n])
    except ValueError as e:
        raise ArtifactError(f"safetensors header is not JSON: {e}") from e
    meta = header.get("__metadata__") or {}
    if not isinstance(meta, dict):
        raise ArtifactError("safetensors metadata is not an object")
    return {str(k): str(v) for k, v in meta.items()}


def load_blob(data: bytes, kind: str) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    from safetensors.numpy import load

    try:
        meta = read_safetensors_metadata(data)
        tensors = load(data)
    except ArtifactError:
        raise
    except Exception as e:  # safetensors raises its own error types
        raise ArtifactError(f"not a valid safetensors file: {e}") from e
    if meta.get("kind") != kind:
        raise ArtifactError(f"artifact kind is {meta.get('kind')!r}, expected {kind!r}")
    return tensors, meta


def save_blob(tensors: dict[str, np.ndarray], meta: dict[str, str]) -> bytes:
    from safetensors.numpy import save

    return save({k: np.ascontiguousarray(v, np.float32) for k, v in tensors.items()},
                metadata=meta)


def meta_json(meta: dict[str, str], key: str, default: Any = None) -> Any:
    try:
        return json.loads(meta[key]) if key in meta else default
    except ValueError as e:
        raise ArtifactError(f"metadata {key!r} is not JSON: {e}") from e


def meta_fingerprint(meta: dict[str, str]) -> ModelFingerprint:
    try:
        return ModelFingerprint.from_dict(json.loads(meta["fingerprint"]))
    except (KeyError, ValueError, TypeError) as e:
        raise ArtifactError(f"bad fingerprint metadata: {e}") from e


def per_layer(tensors: dict[str, np.ndarray], prefix: str, fp: ModelFingerprint
              ) -> dict[int, np.ndarray]:
    """`{prefix}.{l}` tensors as layer -> [H] float32, checked against the model."""
    out: dict[int, np.ndarray] = {}
    for key, arr in tensors.items():
        if not key.startswith(prefix + "."):
            continue
        try:
            layer = int(key[len(prefix) + 1:])
        except ValueError:
            raise ArtifactError(f"unexpected tensor {key!r}") from None
        v = np.asarray(arr, np.float32).reshape(-1)
        if not 0 <= layer < fp.num_layers or v.shape != (fp.hidden_size,):
            raise ArtifactError(f"tensor {key!r} does not fit the model {fp.to_dict()}")
        if not np.all(np.isfinite(v)):
            raise ArtifactError(f"tensor {key!r} holds non-finite values")
        out[layer] = v
    return out
