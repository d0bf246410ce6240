"""Validate a request's `control` against the artifact store and the served model, and
turn it into the wire spec the worker runs. Every failure is an APIError(400) raised
before anything reaches the engine."""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from pydantic import ValidationError

from vsteer.artifacts import ArtifactStore, ModelFingerprint
from vsteer.plugins.api import Control, ResolveContext, StoredVector
from vsteer.plugins.control_registry import installed_controls
from vsteer.plugins.slot_table import PRIVATE_KEY_PREFIX
from vsteer.server.artifact_access import load_artifact
from vsteer.server.auth import OPERATOR, Principal
from vsteer.server.control_protocol import ControlSpec
from vsteer.server.errors import APIError, pydantic_errors_to_api_error
from vsteer.wire import MAX_STEER_ENTRIES, WireSpec, WireSteer, encode


@dataclass
class ResolvedControl:
    wire: WireSpec
    applied: dict[str, Any]  # echoed back in the response's `control`
    private_prefill: bool = False  # a control must compute every prompt token
    # controls that reach the worker (a wire, or shared token-plan entries)
    runs: list[str] = field(default_factory=list)
    # per control: private steering slots each engine request of it takes (Resolution)
    private_slots: dict[str, int] = field(default_factory=dict)
    shared_slots: set[str] = field(default_factory=set)  # shared slots controls load
    streams: list[str] = field(default_factory=list)  # controls with per-chunk parts

    @property
    def active(self) -> bool:
        w = self.wire
        return bool(w.steer) or bool(w.plugins)

    @property
    def counted_controls(self) -> list[str]:
        """The controls `vsteer_controlled_requests_total{control}` counts this request
        under: every control that reaches the worker (steering with a nonzero scale, a
        mode that runs; a mode `off` counts for none)."""
        return sorted(set(self.runs))

    @property
    def slot_keys(self) -> set[str]:
        """Steering slots this request holds while it runs (admission counts them): the
        shared plan's, and each control's private ones, per choice."""
        keys = {e.key for e in self.wire.steer} | self.shared_slots
        for name, k in self.private_slots.items():
            keys |= {f"{PRIVATE_KEY_PREFIX}{self.wire.rid}:{name}:{i}"
                     for i in range(k * self.wire.n)}
        return keys

    def encoded(self) -> str:
        return encode(self.wire)

    def cache_salt(self) -> str:
        """Prefix-cache salt: steered KV blocks are never shared with other specs."""
        # A control that asks for it (private_prefill: a decision writing a private slot
        # inside the prefill, a mean-pooled probe that must see every prompt token,
        # early exit's `exit` mode, steering on a window of positions) names the
        # request in the salt, so its KV is never shared.
        w = self.wire
        body = encode(WireSpec(rid=w.rid if self.private_prefill else "", steer=w.steer,
                               plugins=w.plugins)).encode()
        return "vsteer-" + hashlib.sha256(body).hexdigest()[:32]


@dataclass(frozen=True)
class _Ask:
    """What every control of one request is resolved against."""

    who: Principal
    bound: float  # the operator's (and tenant's) bound on any scale
    max_tokens: int | None
    n: int
    stops_at_eos: bool
    stream: bool
    route: str


@dataclass
class _Installed:
    """What the installed controls of one request resolved to."""

    wires: dict[str, str] = field(default_factory=dict)
    applied: dict[str, Any] = field(default_factory=dict)
    steer: list[WireSteer] = field(default_factory=list)
    runs: list[str] = field(default_factory=list)
    private: bool = False
    private_slots: dict[str, int] = field(default_factory=dict)
    shared_slots: set[str] = field(default_factory=set)
    streams: list[str] = field(default_factory=list)


class ControlResolver:
    def __init__(self, store: ArtifactStore, fingerprint: ModelFingerprint,
                 max_abs_scale: float,
                 controls: dict[str, Control] | None = None, max_model_len: int = 0,
                 worker_info: dict[str, dict[str, Any]] | None = None) -> None:
        self.controls = installed_controls() if controls is None else controls
        self.worker_info = worker_info or {}  # the worker's hello: control -> describe()
        self.max_model_len = max_model_len
        self.store = store
        self.fingerprint = fingerprint
        self.max_abs_scale = max_abs_scale

    def resolve(self, raw: Any, who: Principal = OPERATOR, max_tokens: int | None = None,
                n: int = 1, stops_at_eos: bool = True, stream: bool = False,
                route: str = "chat") -> ResolvedControl:
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            raise APIError(400, "control must be a JSON object", param="control",
                           code="invalid_value")
        raw = self._apply_tenant_defaults(raw, who)
        own = {k: v for k, v in raw.items() if k in self.controls}
        try:  # a key no installed control takes
            ControlSpec.model_validate({k: v for k, v in raw.items() if k not in own})
        except ValidationError as e:
            raise pydantic_errors_to_api_error(e, "control") from None
        bound = self.max_abs_scale
        if who.tenant is not None and who.tenant.policy.max_abs_scale is not None:
            bound = min(bound, who.tenant.policy.max_abs_scale)
        ask = _Ask(who, bound, max_tokens, n, stops_at_eos, stream, route)
        out = self._resolve_controls(own, ask)
        used = len(out.steer) + sum(out.private_slots.values())
        if used > MAX_STEER_ENTRIES:
            raise APIError(400, f"control uses more than {MAX_STEER_ENTRIES} steering entries "
                           "(steer entries and force entries, plus one for each decision "
                           "that steers: a refusal guard or controller, a mitigating probe)",
                           param="control", code="too_many_slots")
        return ResolvedControl(WireSpec(rid=uuid.uuid4().hex, n=n, steer=out.steer,
                                        plugins=out.wires), out.applied,
                               private_prefill=out.private, runs=out.runs,
                               private_slots=out.private_slots,
                               shared_slots=out.shared_slots, streams=out.streams)

    def _resolve_controls(self, raw: dict[str, Any], ask: _Ask) -> _Installed:
        """The controls (plugins/api.py) the request names, in its order: their wire (JSON
        text for the worker), shared token-plan entries and what each reports as
        applied."""
        out = _Installed()
        for name, value in raw.items():
            control = self.controls[name]
            param = f"control.{name}"
            try:
                request = control.schema.model_validate(value)
            except ValidationError as e:
                raise pydantic_errors_to_api_error(e, param) from None
            who = ask.who
            ctx = ResolveContext(self.fingerprint, param, ask.bound,
                                 partial(self._vector, who), self.max_model_len,
                                 ask.max_tokens, partial(self._artifact, who), ask.n,
                                 ask.stops_at_eos, self.worker_info.get(name, {}),
                                 ask.stream, ask.route, who)
            res = control.resolve(request, ctx)
            out.applied[name] = res.applied
            out.steer += res.steer
            if res.wire is not None:
                out.wires[name] = json.dumps(res.wire)
                if res.private_slots:
                    out.private_slots[name] = res.private_slots
                out.shared_slots.update(res.shared_slots)
                if res.streams:
                    out.streams.append(name)
            if res.wire is not None or res.steer:
                out.runs.append(name)  # else nothing runs in the worker (e.g. mode "off")
                out.private |= res.private_prefill
        return out

    def _artifact(self, who: Principal, kind: str, name: str, param: str) -> Any:
        return load_artifact(self.store, self.fingerprint, kind, name, param, who)

    def _vector(self, who: Principal, name: str, param: str) -> StoredVector:
        stored = load_artifact(self.store, self.fingerprint, "vector", name, param, who)
        v = stored.value
        return StoredVector(name, str(stored.path), stored.sha256, list(v.layers),
                            dict(v.directions))

    @staticmethod
    def _apply_tenant_defaults(raw: dict[str, Any], who: Principal) -> dict[str, Any]:
        """Tenant defaults fill what the request leaves out; a locked part must not be
        changed (403)."""
        if who.tenant is None:
            return raw
        pol = who.tenant.policy
        for part in pol.locked:
            if part in raw and _normalized(part, raw[part]) != _normalized(
                    part, pol.default_control[part]):
                raise APIError(403, f"control.{part} is locked by the operator for tenant "
                               f"{who.tenant.name!r} (fixed to {pol.default_control[part]})",
                               param=f"control.{part}", code="control_locked")
        return {**pol.default_control, **raw}


def _normalized(part: str, value: Any) -> Any:
    """A control part as the server reads it (defaults filled in), for comparison."""
    control = installed_controls().get(part)
    try:
        return control.schema.model_validate(value).model_dump() if control else value
    except ValidationError:
        return value
