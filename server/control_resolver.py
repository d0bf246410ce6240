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
from vsteer.server.auth import OPERATOR, Principal
from vsteer.server.control_protocol import ControlSpec
from vsteer.server.errors import APIError, pydantic_errors_to_api_error
from vsteer.server.hallucination_resolver import resolve_hallucination
from vsteer.server.refusal_resolver import load_artifact, resolve_refusal
from vsteer.wire import MAX_STEER_ENTRIES, WireSpec, WireSteer, encode


@dataclass
class ResolvedControl:
    wire: WireSpec
    applied: dict[str, Any]  # echoed back in the response's `control`
    private_prefill: bool = False  # an installed control must compute every prompt token
    # installed controls that reach the worker (a wire, or shared token-plan entries)
    runs: list[str] = field(default_factory=list)

    @property
    def active(self) -> bool:
        w = self.wire
        return (bool(w.steer) or w.decide is not None or w.probe is not None
                or bool(w.plugins))

    @property
    def counted_controls(self) -> list[str]:
        """The controls `vsteer_controlled_requests_total{control}` counts this request
        under: every installed control that reaches the worker (steering with a nonzero
        scale, a mode that runs), refusal and hallucination as asked (any mode)."""
        names = [n for n in ("refusal", "hallucination") if n in self.applied]
        return sorted(set(self.runs) | set(names))

    @property
    def slot_keys(self) -> set[str]:
        """Steering slots this request holds while it runs (admission counts them)."""
        keys = {e.key for e in self.wire.steer}
        if self.wire.decide is not None:
            keys |= {self.wire.decide.source_key, self.wire.decide.target_key}
        if self.wire.probe is not None and self.wire.probe.target_key:
            keys |= {self.wire.probe.source_key, self.wire.probe.target_key}
        return keys

    def encoded(self) -> str:
        return encode(self.wire)

    def cache_salt(self) -> str:
        """Prefix-cache salt: steered KV blocks are never shared with other specs."""
        # A private slot key (refusal decision, mitigating probe) names the request, so
        # its KV is never shared. A mean-pooled probe must see every prompt token, so it
        # must not start from a cached prefix either: its salt names the request too.
        # So does an installed control that asks for it (private_prefill), such as
        # early exit's `exit` mode or steering on a window of positions.
        w = self.wire
        mean_probe = w.probe is not None and self.applied["hallucination"]["pooling"] == "mean"
        private = mean_probe or self.private_prefill
        body = encode(WireSpec(rid=w.rid if private else "", steer=w.steer,
                               decide=w.decide, probe=w.probe, plugins=w.plugins)).encode()
        return "vsteer-" + hashlib.sha256(body).hexdigest()[:32]


@dataclass
class _Installed:
    """What the installed controls of one request resolved to."""

    wires: dict[str, str] = field(default_factory=dict)
    applied: dict[str, Any] = field(default_factory=dict)
    steer: list[WireSteer] = field(default_factory=list)
    runs: list[str] = field(default_factory=list)
    private: bool = False


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
                n: int = 1, stops_at_eos: bool = True) -> ResolvedControl:
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            raise APIError(400, "control must be a JSON object", param="control",
                           code="invalid_value")
        raw = self._apply_tenant_defaults(raw, who)
        own = {k: v for k, v in raw.items() if k in self.controls}
        try:
            spec = ControlSpec.model_validate({k: v for k, v in raw.items() if k not in own})
        except ValidationError as e:
            raise pydantic_errors_to_api_error(e, "control") from None
        bound = self.max_abs_scale
        if who.tenant is not None and who.tenant.policy.max_abs_scale is not None:
            bound = min(bound, who.tenant.policy.max_abs_scale)
        installed = self._resolve_installed(own, who, bound, max_tokens, n, stops_at_eos)
        rid = uuid.uuid4().hex
        steer: list[WireSteer] = list(installed.steer)  # in the request's order, first
        applied: dict[str, Any] = {}
        decide = None
        if spec.refusal is not None:
            ref = resolve_refusal(spec.refusal, rid, self.store, self.fingerprint, who, bound)
            steer += ref.steer
            decide = ref.decide
            applied["refusal"] = ref.applied
        probe = None
        if spec.hallucination is not None:
            rp = resolve_hallucination(spec.hallucination, rid, self.store, self.fingerprint,
                                       who, bound)
            probe = rp.wire
            applied["hallucination"] = rp.applied
        used = len(steer) + (decide is not None) + bool(probe is not None and probe.target_key)
        if used > MAX_STEER_ENTRIES:
            raise APIError(400, f"control uses more than {MAX_STEER_ENTRIES} steering entries "
                           "(steer entries, plus one for refusal, plus one for a mitigating "
                           "probe)", param="control", code="too_many_slots")
        applied = {**installed.applied, **applied}
        return ResolvedControl(WireSpec(rid=rid, steer=steer, decide=decide, probe=probe,
                                        plugins=installed.wires), applied,
                               installed.private, installed.runs)

    def _resolve_installed(self, raw: dict[str, Any], who: Principal, bound: float,
                           max_tokens: int | None, n: int = 1, stops_at_eos: bool = True
                           ) -> _Installed:
        """The installed controls (plugins/api.py) the request names, in its order: their
        wire (JSON text for the worker), shared token-plan entries and what each reports
        as applied."""
        out = _Installed()
        for name, value in raw.items():
            control = self.controls[name]
            param = f"control.{name}"
            try:
                request = control.schema.model_validate(value)
            except ValidationError as e:
                raise pydantic_errors_to_api_error(e, param) from None
            ctx = ResolveContext(self.fingerprint, param, bound, partial(self._vector, who),
                                 self.max_model_len, max_tokens,
                                 partial(self._artifact, who), n, stops_at_eos,
                                 self.worker_info.get(name, {}))
            res = control.resolve(request, ctx)
            out.applied[name] = res.applied
            out.steer += res.steer
            if res.wire is not None:
                out.wires[name] = json.dumps(res.wire)
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
    installed = installed_controls().get(part)
    try:
        if installed is not None:
            return installed.schema.model_validate(value).model_dump()
        return ControlSpec.model_validate({part: value}).model_dump()[part]
    except ValidationError:
        return value
