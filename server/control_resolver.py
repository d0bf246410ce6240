"""Validate a request's `control` against the artifact store and the served model, and
turn it into the wire spec the worker runs. Every failure is an APIError(400) raised
before anything reaches the engine."""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass
from functools import partial
from typing import Any

from pydantic import ValidationError

from vsteer.artifacts import ArtifactStore, ModelFingerprint
from vsteer.plugins.api import Control, ResolveContext, StoredVector
from vsteer.plugins.control_registry import installed_controls
from vsteer.server.auth import OPERATOR, Principal
from vsteer.server.control_protocol import ControlSpec
from vsteer.server.dose_resolver import scale_for_kl
from vsteer.server.errors import APIError, pydantic_errors_to_api_error
from vsteer.server.hallucination_resolver import resolve_hallucination
from vsteer.server.refusal_resolver import check_scale, load_artifact, resolve_refusal
from vsteer.wire import MAX_STEER_ENTRIES, WireSpec, WireSteer, encode, steer_entry


@dataclass
class ResolvedControl:
    wire: WireSpec
    applied: dict[str, Any]  # echoed back in the response's `control`
    private_prefill: bool = False  # an installed control must compute every prompt token

    @property
    def active(self) -> bool:
        w = self.wire
        return (bool(w.steer) or w.decide is not None or w.probe is not None
                or bool(w.plugins))

    @property
    def counted_controls(self) -> list[str]:
        """The controls `vsteer_controlled_requests_total{control}` counts this request
        under: steering that reaches the kernel, refusal and hallucination as asked
        (any mode), and every installed control that runs in the worker."""
        w = self.wire
        names = ["steer"] if w.steer else []
        names += [n for n in ("refusal", "hallucination") if n in self.applied]
        return names + list(w.plugins)

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
        # early exit's `exit` mode. Steering on anything but `all` positions: whether a
        # position was steered depends on where that request's prompt ended (a later
        # prompt may extend it with the reply, whose positions were `generated` there),
        # so never shared.
        w = self.wire
        mean_probe = w.probe is not None and self.applied["hallucination"]["pooling"] == "mean"
        windowed = any(e.positions != "all" for e in w.steer)
        private = mean_probe or windowed or self.private_prefill
        body = encode(WireSpec(rid=w.rid if private else "", steer=w.steer,
                               decide=w.decide, probe=w.probe, plugins=w.plugins)).encode()
        return "vsteer-" + hashlib.sha256(body).hexdigest()[:32]


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
        plugins, plugin_applied, private = self._resolve_installed(own, who, bound,
                                                                   max_tokens, n, stops_at_eos)
        rid = uuid.uuid4().hex
        steer: list[WireSteer] = []
        applied: dict[str, Any] = {}
        steer_applied: list[dict[str, Any]] = []
        for i, entry in enumerate(spec.steer):
            param = f"control.steer[{i}]"
            stored = load_artifact(self.store, self.fingerprint, "vector", entry.vector,
                                   f"{param}.vector", who)
            layers = self._layers(entry.layers, stored.value.layers, entry.vector, param)
            scale = entry.scale if entry.kl is None else scale_for_kl(entry, stored.value,
                                                                      layers, param)
            check_scale(scale, bound, f"{param}.scale")
            steer_applied.append({"vector": entry.vector, "scale": scale,
                                  "layers": layers, "positions": entry.positions_json(),
                                  "op": entry.op})
            if entry.kl is not None:
                steer_applied[-1]["kl"] = entry.kl
            if scale == 0.0:
                continue  # scale 0 is no steering, bit for bit: nothing reaches the kernel
            positions, window = entry.wire_positions()
            steer.append(steer_entry(entry.vector, stored.sha256, str(stored.path), layers,
                                     scale, entry.op, positions, window=window))
        if steer_applied:
            applied["steer"] = steer_applied
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
        applied.update(plugin_applied)
        return ResolvedControl(WireSpec(rid=rid, steer=steer, decide=decide, probe=probe,
                                        plugins=plugins), applied,
                               private)

    def _resolve_installed(self, raw: dict[str, Any], who: Principal, bound: float,
                           max_tokens: int | None, n: int = 1, stops_at_eos: bool = True
                           ) -> tuple[dict[str, str], dict[str, Any], bool]:
        """The installed controls (plugins/api.py) the request names: their wire (JSON
        text for the worker) and what each reports as applied."""
        wires: dict[str, str] = {}
        applied: dict[str, Any] = {}
        private = False
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
            applied[name] = res.applied
            if res.wire is None:
                continue  # nothing runs in the worker (e.g. mode "off")
            wires[name] = json.dumps(res.wire)
            private |= res.private_prefill
        return wires, applied, private

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

    def _layers(self, requested: list[int] | None, own: list[int], name: str,
                param: str) -> list[int]:
        if requested is None:
            return list(own)
        n = self.fingerprint.num_layers
        for la in requested:
            if not 0 <= la < n:
                raise APIError(400, f"{param}.layers: layer {la} is out of range (model has "
                               f"{n} layers, 0..{n - 1})", param=f"{param}.layers",
                               code="layer_out_of_range")
            if la not in own:
                raise APIError(400, f"{param}.layers: vector {name!r} has no direction at "
                               f"layer {la} (it has {own})", param=f"{param}.layers",
                               code="layer_not_in_artifact")
        return sorted(set(requested))


def _normalized(part: str, value: Any) -> Any:
    """A control part as the server reads it (defaults filled in), for comparison."""
    installed = installed_controls().get(part)
    try:
        if installed is not None:
            return installed.schema.model_validate(value).model_dump()
        return ControlSpec.model_validate({part: value}).model_dump()[part]
    except ValidationError:
        return value
