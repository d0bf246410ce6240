"""The FastAPI app: OpenAI routes, control artifacts, /health, /metrics.

The lifespan starts vLLM's AsyncLLM (through vLLM's own builder), waits for the
vsteer runtime in the worker to say hello on the channel, and builds vLLM's serving
classes onto `app.state`. A server whose plugin did not load refuses to start.
"""

from __future__ import annotations

import asyncio
import logging
from argparse import Namespace
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from vsteer.artifacts import ArtifactStore, ModelFingerprint
from vsteer.engine_config import DEFAULT_STEER_SLOTS, vsteer_additional_config
from vsteer.plugins import vllm_server_compat as compat
from vsteer.plugins.channel import ChannelListener, new_channel_address
from vsteer.server import metrics
from vsteer.server.admission import SlotAdmission
from vsteer.server.auth import Auth
from vsteer.server.control_resolver import ControlResolver
from vsteer.server.drain import Drain, DrainGate
from vsteer.server.errors import APIError, error_response
from vsteer.server.openapi_bodies import (
    ChatCompletionBody,
    CompletionBody,
    ResponsesBody,
    json_body,
)
from vsteer.server.policy import PolicyFile
from vsteer.server.rate_limit import RateLimit
from vsteer.server.routes_vectors import router as vectors_router
from vsteer.server.serving import ControlledServing

log = logging.getLogger("vsteer.server")
HELLO_TIMEOUT_S = 120.0


@dataclass
class ServerConfig:
    vllm_args: Namespace  # vLLM's own parsed serve arguments (model, dtype, ...)
    artifacts: Path
    api_keys: list[str] = field(default_factory=list)
    admin_key: str | None = None
    max_steer_slots: int = DEFAULT_STEER_SLOTS
    max_private_slots: int | None = None  # None: one per sequence (--max-num-seqs)
    max_abs_scale: float = 64.0
    policy: Path | None = None
    rate_limit: RateLimit | None = None  # per non-admin key
    drain_timeout_s: float = 30.0


@dataclass
class VsteerState:
    auth: Auth
    store: ArtifactStore
    fingerprint: ModelFingerprint
    serving: ControlledServing
    engine: Any


def workers_may_be_remote(vllm_args: Any) -> bool:
    """vLLM's Ray executor or a multi-node launch may place workers on other nodes: the
    results channel must then be a TCP address, not a socket file beside the server."""
    return (getattr(vllm_args, "distributed_executor_backend", None) == "ray"
            or int(getattr(vllm_args, "nnodes", 1) or 1) > 1)


def create_app(cfg: ServerConfig) -> FastAPI:
    policy = PolicyFile(cfg.policy) if cfg.policy is not None else None  # bad file: no start

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        listener = ChannelListener(new_channel_address(remote=workers_may_be_remote(
            cfg.vllm_args)))
        listener.export()  # inherited by engine processes (and copied into Ray workers)
        engine_args = compat.engine_args_from_cli(
            cfg.vllm_args, vsteer_additional_config(cfg.max_steer_slots,
                                                    max_private_slots=cfg.max_private_slots))
        try:
            async with compat.build_engine_client(engine_args) as engine:
                hello = await asyncio.to_thread(listener.wait_ready, HELLO_TIMEOUT_S)
                fingerprint = ModelFingerprint.from_hf_config(engine.model_config.hf_config)
                if ModelFingerprint.from_dict(hello["fingerprint"]) != fingerprint:
                    raise RuntimeError(f"worker reports {hello['fingerprint']}, server sees "
                                       f"{fingerprint}")
                await compat.init_serving_state(engine, app.state, cfg.vllm_args)
                store = ArtifactStore(cfg.artifacts)
                admission = SlotAdmission(cfg.max_steer_slots, int(hello["private_slots"]))
                resolver = ControlResolver(store, fingerprint, cfg.max_abs_scale,
                                           max_model_len=engine.model_config.max_model_len,
                                           worker_info=hello.get("controls"))
                app.state.vsteer = VsteerState(
                    Auth(cfg.api_keys, cfg.admin_key, policy, cfg.rate_limit), store,
                    fingerprint,
                    ControlledServing(app.state, resolver, admission, listener), engine)
                unregister = metrics.register_worker_collector(metrics.WorkerStatsCollector(
                    lambda: listener.stats.get(0),
                    lambda: (admission.in_use, admission.private_in_use,
                             admission.waiting)))
                log.info("vsteer ready: %s, %s forward, kernels %s, %d steering slots, "
                         "%d private slots, artifacts %s", fingerprint.architecture,
                         "eager" if hello.get("eager") else "compiled", hello["backends"],
                         cfg.max_steer_slots, hello["private_slots"], cfg.artifacts)
                try:
                    yield
                finally:
                    unregister()
        finally:
            listener.close()

    app = FastAPI(title="vsteer", version=_version(), lifespan=lifespan)
    _install_error_handlers(app)
    drain = app.state.drain = Drain(cfg.drain_timeout_s)
    app.add_middleware(DrainGate, drain=drain)
    app.add_middleware(metrics.RequestCounter)  # outermost: counts the drain's 503s too

    @app.get("/health")
    async def health(request: Request) -> Response:
        if drain.draining:  # readiness fails: the pod leaves the Service while it drains
            return error_response(503, "draining for shutdown", code="server_shutting_down")
        try:
            await request.app.state.vsteer.engine.check_health()
        except Exception as e:  # an unhealthy engine raises; report it, don't crash
            return error_response(503, f"engine unhealthy: {e}", code="engine_unhealthy")
        return JSONResponse({"status": "ok"})

    @app.get("/metrics")
    async def prometheus_metrics() -> Response:
        return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/models")
    async def models(request: Request) -> Response:
        request.app.state.vsteer.auth.check(request)
        listing = await request.app.state.openai_serving_models.show_available_models()
        return JSONResponse(listing.model_dump())

    @app.post("/v1/chat/completions", openapi_extra=json_body(ChatCompletionBody))
    async def chat(request: Request) -> Response:
        who = request.app.state.vsteer.auth.check(request)
        return await request.app.state.vsteer.serving.chat(request, who)

    @app.post("/v1/completions", openapi_extra=json_body(CompletionBody))
    async def completions(request: Request) -> Response:
        who = request.app.state.vsteer.auth.check(request)
        return await request.app.state.vsteer.serving.completion(request, who)

    @app.post("/v1/responses", openapi_extra=json_body(ResponsesBody))
    async def responses(request: Request) -> Response:
        who = request.app.state.vsteer.auth.check(request)
        return await request.app.state.vsteer.serving.responses(request, who)

    @app.get("/v1/vsteer/trace/{request_id}")
    async def trace(request: Request, request_id: str) -> Response:
        """Operator: the engine steps each choice of a controlled reply ran in (by the
        `control.request_id` its response carried), from the workers' step reports."""
        who = request.app.state.vsteer.auth.check(request)
        if not who.admin:
            raise APIError(403, "the step trace needs the admin key", code="operator_only")
        steps = request.app.state.vsteer.serving.listener.book.trace(request_id)
        if steps is None:
            raise APIError(404, f"no trace of request {request_id!r} (unknown, or aged out)",
                           param="request_id", code="unknown_request")
        return JSONResponse({"request_id": request_id, "choices": [
            {"index": c, "steps": [st for st, _ in s], "batch": [b for _, b in s]}
            for c, s in steps.items()]})

    app.include_router(vectors_router)
    return app


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def api_error(_: Request, exc: APIError) -> Response:
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> Response:
        return error_response(400, str(exc.errors()[0].get("msg", "invalid request")),
                              code="invalid_value")


def _version() -> str:
    from vsteer import __version__

    return __version__
