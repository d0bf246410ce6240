"""Validate a request's `control` against the artifact store and the served model, and
turn it into the wire spec the worker runs. Every failure is an APIError(400) raised
before anything reaches the engine."""

from __future__ import annotations

import hashlib
import math
import uuid
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from vsteer.artifacts import ArtifactError, ArtifactStore, ModelFingerprint, check_name
from vsteer.server.control_protocol import ControlSpec
from vsteer.server.errors import APIError, pydantic_errors_to_api_error
from vsteer.wire import WireSpec, WireSteer, encode, steer_entry


@dataclass
class ResolvedControl:
    wire: WireSpec
    applied: dict[str, Any]  # echoed back in the response's `control`
    slot_keys: set[str] = field(default_factory=set)

    @property
    def active(self) -> bool:
        return bool(self.wire.steer)

    def encoded(self) -> str:
        return encode(self.wire)

    def cache_salt(self) -> str:
        """Prefix-cache salt: steered KV blocks are never shared with other specs."""
        body = encode(WireSpec(rid="", steer=self.wire.steer)).encode()
        return "vsteer-" + hashlib.sha256(body).hexdigest()[:32]


class ControlResolver:
    def __init__(self, store: ArtifactStore, fingerprint: ModelFingerprint,
                 max_abs_scale: float) -> None:
        self.store = store
        self.fingerprint = fingerprint
        self.max_abs_scale = max_abs_scale

    def resolve(self, raw: Any) -> ResolvedControl:
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            raise APIError(400, "control must be a JSON object", param="control")
        try:
            spec = ControlSpec.model_validate(raw)
        except ValidationError as e:
            raise pydantic_errors_to_api_error(e, "control") from None
        steer: list[WireSteer] = []
        applied: list[dict[str, Any]] = []
        keys: set[str] = set()
        for i, entry in enumerate(spec.steer):
            param = f"control.steer[{i}]"
            if not math.isfinite(entry.scale) or abs(entry.scale) > self.max_abs_scale:
                raise APIError(400, f"{param}.scale must be finite and within "
                               f"±{self.max_abs_scale:g}", param=f"{param}.scale")
            stored = self._vector(entry.vector, f"{param}.vector")
            layers = self._layers(entry.layers, stored.vector.layers, entry.vector, param)
            applied.append({"vector": entry.vector, "scale": entry.scale, "layers": layers,
                            "positions": entry.positions, "op": entry.op})
            if entry.scale == 0.0:
                continue  # scale 0 is no steering, bit for bit: nothing reaches the kernel
            wire_entry = steer_entry(entry.vector, stored.sha256, str(stored.path), layers,
                                     entry.scale, entry.op, entry.positions)
            keys.add(wire_entry.key)
            steer.append(wire_entry)
        wire = WireSpec(rid=uuid.uuid4().hex, steer=steer)
        return ResolvedControl(wire, {"steer": applied} if applied else {}, keys)

    def _vector(self, name: str, param: str):
        try:
            check_name(name)
            stored = self.store.get_vector(name)
        except KeyError:
            raise APIError(400, f"unknown steering vector {name!r}", param=param,
                           code="unknown_vector") from None
        except ArtifactError as e:
            raise APIError(400, f"steering vector {name!r} is unusable: {e}",
                           param=param) from None
        if (why := stored.vector.fingerprint.mismatch(self.fingerprint)) is not None:
            raise APIError(400, f"steering vector {name!r} was {why}", param=param,
                           code="wrong_model")
        return stored

    def _layers(self, requested: list[int] | None, own: list[int], name: str,
                param: str) -> list[int]:
        if requested is None:
            return list(own)
        n = self.fingerprint.num_layers
        for la in requested:
            if not 0 <= la < n:
                raise APIError(400, f"{param}.layers: layer {la} is out of range (model has "
                               f"{n} layers, 0..{n - 1})", param=f"{param}.layers")
            if la not in own:
                raise APIError(400, f"{param}.layers: vector {name!r} has no direction at "
                               f"layer {la} (it has {own})", param=f"{param}.layers")
        return sorted(set(requested))
