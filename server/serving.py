"""Controlled OpenAI serving: validate `control`, wait for slots, hand the request to
vLLM's own serving classes, and report what was applied in the response."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import msgspec
from fastapi import Request
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError

from vsteer.plugins import vllm_server_compat as compat
from vsteer.plugins.channel import ChannelListener
from vsteer.server import metrics
from vsteer.server.admission import SlotAdmission
from vsteer.server.auth import OPERATOR, Principal
from vsteer.server.body import read_json_object
from vsteer.server.closing_stream import ClosingStreamingResponse
from vsteer.server.control_report import ControlReporter
from vsteer.server.control_resolver import ControlResolver, ResolvedControl
from vsteer.server.errors import APIError, error_response, pydantic_errors_to_api_error
from vsteer.server.responses_api import (
    abstain_response,
    check_responses_body,
    mark_incomplete,
    output_tokens,
    responses_stream,
    responses_usage,
)
from vsteer.wire import EXTRA_ARGS_KEY

ABSTAIN_TEXT = ("I am not sure I know the answer to this, so I would rather not guess. "
                "(vsteer: a hallucination probe flagged this question.)")
ABSTAIN_FINISH = "content_filter"


class ControlledServing:
    def __init__(self, state: Any, resolver: ControlResolver, admission: SlotAdmission,
                 listener: ChannelListener) -> None:
        self.state = state  # FastAPI app.state holding vLLM's serving classes
        self.resolver = resolver
        self.admission = admission
        self.listener = listener
        self.reporter = ControlReporter(listener.book, resolver.controls)
        self.chat_cls, self.completion_cls = compat.openai_request_classes()
        self.responses_cls = compat.responses_request_class()
        self.error_cls = compat.error_response_class()
        self.client_error_cls = compat.client_error_class()

    async def chat(self, raw: Request, who: Principal = OPERATOR) -> Response:
        return await self._serve(raw, self.chat_cls,
                                 self.state.openai_serving_chat.create_chat_completion, who)

    async def completion(self, raw: Request, who: Principal = OPERATOR) -> Response:
        return await self._serve(raw, self.completion_cls,
                                 self.state.openai_serving_completion.create_completion, who)

    async def responses(self, raw: Request, who: Principal = OPERATOR) -> Response:
        return await self._serve(raw, self.responses_cls,
                                 self.state.openai_serving_responses.create_responses, who,
                                 responses_api=True)

    async def _serve(self, raw: Request, req_cls: type, handler: Callable[..., Any],
                     who: Principal, responses_api: bool = False) -> Response:
        try:
            body = await read_json_object(raw)
            resolved = self.resolver.resolve(
                body.pop("control", None), who, _max_tokens(body), _n(body),
                stops_at_eos=not body.get("ignore_eos") and not body.get("min_tokens"))
            self._check_abstain(body, resolved)
            if responses_api:
                check_responses_body(body, resolved)
                wants_usage = False
            else:
                wants_usage = self._force_stream_usage(body, self._per_token(resolved))
            request = self._vllm_request(req_cls, body, resolved)
        except APIError as e:
            return e.response()
        keys = resolved.slot_keys
        admitted = False
        released = False

        def release() -> None:
            nonlocal released
            if admitted and not released:
                released = True
                self.admission.release(keys)

        async def admit_then_handle():
            nonlocal admitted
            with metrics.ADMISSION_WAIT.time():
                await self.admission.acquire(keys)  # may wait for free steering slots
            admitted = True
            return await handler(request, raw)

        try:
            # A client that leaves while waiting for slots or for the answer cancels both.
            result = await self._cancellable(admit_then_handle(), raw)
        except self.client_error_cls as e:  # vLLM's checks inside its handler (max_tokens 0)
            release()
            return _client_error(e).response()
        except BaseException:
            release()
            raise
        for name in resolved.counted_controls:
            metrics.CONTROLLED_REQUESTS.labels(name).inc()
        if isinstance(result, self.error_cls):
            release()
            status = result.error.code
            return error_response(status, result.error.message, result.error.param,
                                  "invalid_value" if status < 500 else "engine_error")
        if responses_api:
            return await self._responses_result(result, resolved, release)
        if not hasattr(result, "__aiter__"):
            release()
            data = result.model_dump()
            if _abstained(await self.reporter.probe(resolved)):
                for choice in data.get("choices") or []:
                    _abstain_choice(choice)
            usage = data.get("usage") or {}
            data["control"] = await self.reporter.final(
                resolved, usage.get("completion_tokens") or 0, resolved.wire.n)
            self._set_finish_reasons(data.get("choices") or [], data["control"], resolved)
            self._count_usage(data.get("usage"))
            return JSONResponse(data)
        return _event_stream(self._stream(result, resolved, wants_usage, release), result,
                             release)

    async def _responses_result(self, result: Any, resolved: ResolvedControl,
                                release: Callable[[], None]) -> Response:
        if hasattr(result, "__aiter__"):
            return _event_stream(responses_stream(
                result, resolved, self.reporter, release, self._count_usage,
                lambda control: self._finish_reason(control, resolved)), result, release)
        release()
        data = result.model_dump(mode="json", by_alias=True)
        if _abstained(await self.reporter.probe(resolved)):
            abstain_response(data, ABSTAIN_TEXT)
        data["control"] = await self.reporter.final(resolved, output_tokens(data))
        if reason := self._finish_reason(data["control"], resolved):
            mark_incomplete(data, reason)
        self._count_usage(responses_usage(data))
        return JSONResponse(data)

    def _vllm_request(self, req_cls: type, body: dict[str, Any], resolved: ResolvedControl):
        xargs = body.get("vllm_xargs")
        if isinstance(xargs, dict) and EXTRA_ARGS_KEY in xargs:
            raise APIError(400, f"vllm_xargs.{EXTRA_ARGS_KEY} is reserved; use `control`",
                           param="vllm_xargs", code="invalid_value")
        try:
            request = req_cls.model_validate(body)
        except ValidationError as e:
            raise pydantic_errors_to_api_error(e) from None
        except self.client_error_cls as e:  # vLLM's own validators (e.g. empty prompt)
            raise _client_error(e) from None
        n = getattr(request, "n", None) or 1
        if n > 1 and body.get("stream") and self._per_token(resolved):
            raise APIError(400, "control.hallucination.per_token scores in a stream need "
                           "n = 1 (without a stream they are reported per choice)",
                           param="control.hallucination.per_token",
                           code="unsupported_combination")
        resolved.wire = msgspec.structs.replace(resolved.wire, n=n)
        if resolved.active:
            request.vllm_xargs = {**(request.vllm_xargs or {}),
                                  EXTRA_ARGS_KEY: resolved.encoded()}
            salt = resolved.cache_salt()
            if request.cache_salt:
                salt = "vsteer-" + hashlib.sha256(
                    f"{request.cache_salt}|{salt}".encode()).hexdigest()[:32]
            request.cache_salt = salt
        return request

    def _finishing(self, resolved: ResolvedControl) -> list[str]:
        """Installed controls of this request that may set its finish_reason."""
        return [n for n in resolved.wire.plugins if self.resolver.controls[n].finishes]

    def _finish_reason(self, control: dict[str, Any], resolved: ResolvedControl
                       ) -> str | None:
        """Why an installed control ended the reply `control` reports on, if one did."""
        for name in self._finishing(resolved):
            rep = control.get(name)
            if isinstance(rep, dict) and (reason := self.resolver.controls[name]
                                          .finish_reason(rep)):
                return reason
        return None

    def _set_finish_reasons(self, choices: list[dict[str, Any]], control: dict[str, Any],
                            resolved: ResolvedControl) -> None:
        """A choice an installed control ended (e.g. react's stop) says so in its
        finish_reason, as OpenAI does for withheld content."""
        per = control.get("choices")
        for choice in choices:
            if not choice.get("finish_reason"):
                continue
            i = choice.get("index", 0)
            reason = self._finish_reason(per[i] if per and i < len(per) else control,
                                         resolved)
            if reason:
                choice["finish_reason"] = reason

    @staticmethod
    def _check_abstain(body: dict[str, Any], resolved: ResolvedControl) -> None:
        """Abstaining means sampling the end token first; vLLM would not stop there."""
        wp = resolved.wire.probe
        if wp is None or wp.action != "abstain":
            return
        if body.get("ignore_eos") or (body.get("min_tokens") or 0) > 0:
            raise APIError(400, "control.hallucination.action 'abstain' cannot be combined "
                           "with ignore_eos or min_tokens > 0",
                           param="control.hallucination.action",
                           code="conflicting_fields")

    @staticmethod
    def _per_token(resolved: ResolvedControl) -> bool:
        return resolved.wire.probe is not None and resolved.wire.probe.per_token

    @staticmethod
    def _force_stream_usage(body: dict[str, Any], per_token: bool = False) -> bool:
        """Streams always ask vLLM for the usage chunk (tokens are counted from it); the
        client only sees it if it asked. Per-token probe scores need the running token
        count on every chunk (continuous usage), which is then stripped unless asked for.
        Returns whether the client asked for usage."""
        opts = body.get("stream_options")
        if not body.get("stream") or not (opts is None or isinstance(opts, dict)):
            return False
        wants = bool((opts or {}).get("include_usage"))
        body["stream_options"] = {**(opts or {}), "include_usage": True}
        if per_token:
            body["stream_options"]["continuous_usage_stats"] = True
        return wants

    async def _cancellable(self, coro, raw: Request):
        """Run the handler; cancel it (and so abort the engine request) on disconnect."""
        work = asyncio.ensure_future(coro)
        watch = asyncio.ensure_future(compat.listen_for_disconnect(raw))
        done, _ = await asyncio.wait({work, watch}, return_when=asyncio.FIRST_COMPLETED)
        if work in done:
            watch.cancel()
            return work.result()
        work.cancel()
        raise asyncio.CancelledError("client disconnected")

    def _count_usage(self, usage: dict[str, Any] | None) -> None:
        if usage:
            metrics.TOKENS.labels("prompt").inc(usage.get("prompt_tokens") or 0)
            metrics.TOKENS.labels("completion").inc(usage.get("completion_tokens") or 0)

    async def _stream(self, chunks: AsyncIterator[str], resolved: ResolvedControl,
                      wants_usage: bool, release: Callable[[], None]) -> AsyncIterator[str]:
        """Pass token chunks through as they come; `control` rides on the final chunk:
        the usage chunk if the client asked for usage, else one more chunk with empty
        `choices` just before [DONE]. Nothing is held back, so no token is delayed."""
        last: dict[str, Any] | None = None
        usage_chunk: dict[str, Any] | None = None
        wp = resolved.wire.probe
        # Abstain: the probe's result exists before the first token is sampled; the
        # first chunk with choices waits for it (no token is delayed by more than that).
        abstain = wp is not None and wp.action == "abstain"
        probe: dict[str, Any] | None = None
        probe_fetched = False
        per_token = self._per_token(resolved)
        sent_scores = 0
        completion_tokens = 0
        # an installed control may end the reply (react's stop): the chunks that carry a
        # finish_reason wait for the report (they are the last ones with choices)
        finishing = bool(self._finishing(resolved))
        held: list[dict[str, Any]] = []
        try:
            async for line in chunks:
                if not line.startswith("data: "):
                    yield line
                    continue
                payload = line[len("data: "):].strip()
                if payload == "[DONE]":
                    break
                data = json.loads(payload)
                last = data
                if data.get("usage") and not data.get("choices"):
                    self._count_usage(data["usage"])
                    completion_tokens = data["usage"].get("completion_tokens") or 0
                    if wants_usage:
                        usage_chunk = data  # sent last, with `control`
                    continue
                hold = finishing and any(c.get("finish_reason") for c in data["choices"])
                if not (abstain or per_token):
                    if hold:
                        held.append(data)
                    else:
                        yield line
                    continue
                if abstain and not probe_fetched:
                    probe, probe_fetched = await self.reporter.probe(resolved), True
                if _abstained(probe):
                    for choice in data["choices"]:
                        if choice.get("finish_reason"):
                            _abstain_choice(choice)
                if per_token:
                    usage = data.pop("usage", None) or {}
                    if wants_usage and usage:
                        data["usage"] = usage  # the client asked for usage stats
                    n = usage.get("completion_tokens") or 0
                    if n > sent_scores:
                        scores = await self.reporter.token_scores(resolved, n)
                        data["control"] = {"hallucination": {
                            "token_scores": scores[sent_scores:n]}}
                        sent_scores = n
                if hold:
                    held.append(data)
                    continue
                yield f"data: {json.dumps(data)}\n\n"
            if last is not None:
                final = usage_chunk or {k: last[k] for k in ("id", "object", "created", "model")
                                        if k in last}
                final.setdefault("choices", [])
                final["control"] = await self.reporter.final(resolved, completion_tokens,
                                                             resolved.wire.n)
                for chunk in held:
                    self._set_finish_reasons(chunk["choices"], final["control"], resolved)
                    yield f"data: {json.dumps(chunk)}\n\n"
                yield f"data: {json.dumps(final)}\n\n"
            yield "data: [DONE]\n\n"
        finally:
            release()
            aclose = getattr(chunks, "aclose", None)
            if aclose is not None:
                await aclose()  # abort the engine request now if the client left


def _event_stream(body: AsyncIterator[str], upstream: Any, release: Callable[[], None]
                  ) -> ClosingStreamingResponse:
    """An SSE response whose cleanup releases the slots and closes vLLM's stream (and
    so aborts its engine request) however the ASGI call ends, also before the first
    chunk."""
    async def cleanup() -> None:
        release()
        aclose = getattr(upstream, "aclose", None)
        if aclose is not None:
            await aclose()

    return ClosingStreamingResponse(body, cleanup, media_type="text/event-stream")


def _max_tokens(body: dict[str, Any]) -> int | None:
    """The request's own generation limit (chat, completions or responses), if set."""
    for key in ("max_completion_tokens", "max_tokens", "max_output_tokens"):
        v = body.get(key)
        if isinstance(v, int) and not isinstance(v, bool) and v > 0:
            return v
    return None


def _n(body: dict[str, Any]) -> int:
    """The choices the request asks for (vLLM validates the field itself)."""
    n = body.get("n")
    return n if isinstance(n, int) and not isinstance(n, bool) and n > 1 else 1


def _client_error(e: Exception) -> APIError:
    """A 400 from vLLM's own request-caused error (its message, its parameter)."""
    return APIError(400, str(e.args[0]) if e.args else str(e),
                    param=getattr(e, "parameter", None), code="invalid_value")


def _abstained(probe: dict[str, Any] | None) -> bool:
    return probe is not None and probe["action"] == "abstain" and bool(probe["fired"])


def _abstain_choice(choice: dict[str, Any]) -> None:
    """An abstaining choice: the model generated nothing (its only token was its end);
    say so in the text and mark it as filtered, as OpenAI does for withheld content."""
    if isinstance(choice.get("message"), dict):
        choice["message"]["content"] = ABSTAIN_TEXT
    elif isinstance(choice.get("delta"), dict):
        choice["delta"]["content"] = ABSTAIN_TEXT
    else:
        choice["text"] = ABSTAIN_TEXT
    choice["finish_reason"] = ABSTAIN_FINISH
