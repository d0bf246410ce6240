"""Artifacts as a request may use them: the tenant's policy, the store and the served
model's fingerprint checked, each failure a coded APIError before the engine."""

from __future__ import annotations

import math

from vsteer.artifacts import ArtifactError, ArtifactStore, ModelFingerprint, Stored, check_name
from vsteer.server.auth import Principal
from vsteer.server.errors import APIError

LABELS = {"vector": "steering vector", "direction": "refusal direction",
          "controller": "refusal controller", "probe": "hallucination probe",
          "exit": "exit predictor", "sae": "SAE", "experts": "expert set"}


def load_artifact(store: ArtifactStore, fp: ModelFingerprint, kind: str, name: str,
                  param: str, who: Principal) -> Stored:
    label = LABELS[kind]
    if who.tenant is not None and not who.tenant.policy.may_use(name):
        raise APIError(403, f"{label} {name!r} is not allowed for tenant {who.tenant.name!r}",
                       param=param, code="artifact_not_allowed")
    try:
        check_name(name)
        stored = store.get(kind, name)
    except KeyError:
        raise APIError(400, f"unknown {label} {name!r}", param=param,
                       code=f"unknown_{kind}") from None
    except ArtifactError as e:
        raise APIError(400, f"{label} {name!r} is unusable: {e}", param=param,
                       code="artifact_invalid") from None
    if (why := stored.value.fingerprint.mismatch(fp)) is not None:
        raise APIError(400, f"{label} {name!r} was {why}", param=param, code="wrong_model")
    return stored


def check_scale(value: float, bound: float, param: str) -> float:
    if not math.isfinite(value) or abs(value) > bound:
        raise APIError(400, f"{param} must be finite and within ±{bound:g}", param=param,
                       code="scale_out_of_range")
    return value
