"""`/v1/control/vectors`: list, inspect, upload (JSON or safetensors) and delete;
`/v1/control/directions` and `/v1/control/controllers`: list (refusal artifacts are
made offline with `vsteer refusal ...` into the shared artifact directory)."""

from __future__ import annotations

from typing import Any

import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from vsteer.artifacts import ArtifactError, SteeringVector, check_name
from vsteer.server.auth import Principal
from vsteer.server.body import read_body, read_json_object
from vsteer.server.errors import APIError, pydantic_errors_to_api_error
from vsteer.server.openapi_bodies import json_body

router = APIRouter()
MAX_UPLOAD_BYTES = 64 * 1024 * 1024


class VectorUpload(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    name: str
    directions: dict[int, list[float]] = Field(min_length=1)
    metadata: dict[str, Any] = Field(default_factory=dict)


def visible_names(store, kind: str, who: Principal, names: list[str] | None = None
                  ) -> list[str]:
    """Artifact names the caller may see: a tenant only those its policy allows."""
    names = store.names(kind) if names is None else names
    if who.tenant is None:
        return names
    return [n for n in names if who.tenant.policy.may_use(n)]


def _ctx(request: Request):
    return request.app.state.vsteer


def _info(name: str, vec: SteeringVector, sha256: str) -> dict[str, Any]:
    return {"id": name, "object": "steering_vector", "layers": vec.layers,
            "method": vec.method, "created": vec.created, "sha256": sha256,
            "fingerprint": vec.fingerprint.to_dict(), "provenance": vec.provenance}


@router.get("/v1/control/vectors")
async def list_vectors(request: Request) -> JSONResponse:
    ctx = _ctx(request)
    who = ctx.auth.check(request)
    data = []
    for name in visible_names(ctx.store, "vector", who):
        try:
            s = ctx.store.get_vector(name)
        except (KeyError, ArtifactError):
            continue  # deleted meanwhile, or a foreign file: not listed
        data.append(_info(name, s.vector, s.sha256))
    return JSONResponse({"object": "list", "data": data})


@router.get("/v1/control/vectors/{name}")
async def get_vector(name: str, request: Request) -> JSONResponse:
    ctx = _ctx(request)
    who = ctx.auth.check(request)
    if name not in visible_names(ctx.store, "vector", who, [name]):
        raise APIError(404, f"no steering vector named {name!r}", code="unknown_vector")
    s = _load(ctx, name)
    return JSONResponse(_info(name, s.vector, s.sha256))


@router.delete("/v1/control/vectors/{name}")
async def delete_vector(name: str, request: Request) -> JSONResponse:
    ctx = _ctx(request)
    ctx.auth.check_admin(request)
    _load(ctx, name)
    ctx.store.delete("vector", name)
    return JSONResponse({"id": name, "object": "steering_vector", "deleted": True})


@router.post("/v1/control/vectors", openapi_extra=json_body(VectorUpload))
async def create_vector(request: Request) -> JSONResponse:
    ctx = _ctx(request)
    ctx.auth.check_admin(request)
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    try:
        if ctype in ("application/octet-stream", "application/x-safetensors"):
            name = request.query_params.get("name") or ""
            body = await read_body(request, MAX_UPLOAD_BYTES)
            vec = SteeringVector.from_safetensors_bytes(body)
        else:
            raw = await read_json_object(request, MAX_UPLOAD_BYTES)
            try:
                up = VectorUpload.model_validate(raw)
            except ValidationError as e:
                raise pydantic_errors_to_api_error(e) from None
            name = up.name
            meta = up.metadata
            vec = SteeringVector(
                {int(k): np.asarray(v, np.float32) for k, v in up.directions.items()},
                ctx.fingerprint, method=str(meta.get("method", "upload")),
                provenance=dict(meta.get("provenance", {})) if isinstance(
                    meta.get("provenance", {}), dict) else {})
        check_name(name)
    except ArtifactError as e:
        raise APIError(400, str(e), code="artifact_invalid") from None
    if (why := vec.fingerprint.mismatch(ctx.fingerprint)) is not None:
        raise APIError(400, f"vector was {why}", code="wrong_model")
    overwrite = request.query_params.get("overwrite", "").lower() in ("1", "true", "yes")
    try:
        ctx.store.save_vector(name, vec, overwrite=overwrite)
    except FileExistsError:
        raise APIError(409, f"vector {name!r} already exists (DELETE it first, or POST "
                       "with ?overwrite=true)", code="artifact_exists") from None
    s = ctx.store.get_vector(name)
    return JSONResponse(_info(name, s.vector, s.sha256), status_code=201)


def _load(ctx, name: str):
    try:
        check_name(name)
        return ctx.store.get_vector(name)
    except KeyError:
        raise APIError(404, f"no steering vector named {name!r}",
                       code="unknown_vector") from None
    except ArtifactError as e:
        raise APIError(400, f"vector {name!r} is unusable: {e}",
                       code="artifact_invalid") from None


def _summary(kind: str, name: str, stored) -> dict[str, Any]:
    v = stored.value
    out = {"id": name, "object": kind, "sha256": stored.sha256, "created": v.created,
           "fingerprint": v.fingerprint.to_dict()}
    if kind == "direction":
        cal = v.calibration
        out.update({"layer": v.layer, "calibrated": cal is not None,
                    "condition_layer": cal.condition_layer if cal else None,
                    "threshold": cal.threshold if cal else None})
    else:
        out.update({"direction": v.direction, "input_layer": v.input_layer,
                    "threshold": v.threshold})
    return out


@router.get("/v1/control/directions")
async def list_directions(request: Request) -> JSONResponse:
    return _list_kind(request, "direction")


@router.get("/v1/control/controllers")
async def list_controllers(request: Request) -> JSONResponse:
    return _list_kind(request, "controller")


def _list_kind(request: Request, kind: str) -> JSONResponse:
    ctx = _ctx(request)
    who = ctx.auth.check(request)
    data = []
    for name in visible_names(ctx.store, kind, who):
        try:
            data.append(_summary(kind, name, ctx.store.get(kind, name)))
        except (KeyError, ArtifactError):
            continue
    return JSONResponse({"object": "list", "data": data})
