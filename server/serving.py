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
    mark_incomplete,
    output_tokens,
    replace_output_text,
    responses_stream,
    responses_usage,
)
from vsteer.wire import EXTRA_ARGS_KEY


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
                                 self.state.openai_serving_chat.create_chat_completion, who,
                                 "chat")

    async def completion(self, raw: Request, who: Principal = OPERATOR) -> Response:
        return await self._serve(raw, self.completion_cls,
                                 self.state.openai_serving_completion.create_completion, who,
                                 "completions")

    async def responses(self, raw: Request, who: Principal = OPERATOR) -> Response:
        return await self._serve(raw, self.responses_cls,
                                 self.state.openai_serving_responses.create_responses, who,
                                 "responses")

    async def _serve(self, raw: Request, req_cls: type, handler: Callable[..., Any],
                     who: Principal, route: str) -> Response:
        responses_api = route == "responses"
        try:
            body = await read_json_object(raw)
            resolved = self.resolver.resolve(
                body.pop("control", None), who, _max_tokens(body), _n(body),
                stops_at_eos=not body.get("ignore_eos") and not body.get("min_tokens"),
                stream=bool(body.get("stream")), route=route)
            wants_usage = not responses_api and self._force_stream_usage(
                body, bool(resolved.streams))
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
                lambda control: (e[0] if (e := self._ended(control, resolved)) else None)),
                result, release)
        release()
        data = result.model_dump(mode="json", by_alias=True)
        data["control"] = await self.reporter.final(resolved, output_tokens(data))
        if ended := self._ended(data["control"], resolved):
            reason, text = ended
            if text is not None:
                replace_output_text(data, text)
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

    def _ended(self, control: dict[str, Any], resolved: ResolvedControl
               ) -> tuple[str, str | None] | None:
        """(finish_reason, the text shown instead or None) when a control ended the reply
        `control` reports on (react's stop, an abstaining probe); None otherwise."""
        for name in self._finishing(resolved):
            rep = control.get(name)
            c = self.resolver.controls[name]
            if isinstance(rep, dict) and (reason := c.finish_reason(rep)):
                return reason, c.replacement(rep)
        return None

    def _set_finish_reasons(self, choices: list[dict[str, Any]], control: dict[str, Any],
                            resolved: ResolvedControl) -> None:
        """A choice a control ended says so in its finish_reason, as OpenAI does for
        withheld content, and shows the control's text instead where it gives one."""
        per = control.get("choices")
        for choice in choices:
            if not choice.get("finish_reason"):
                continue
            i = choice.get("index", 0)
            ended = self._ended(per[i] if per and i < len(per) else control, resolved)
            if ended:
                choice["finish_reason"] = ended[0]
                if ended[1] is not None:
                    _replace_text(choice, ended[1])

    @staticmethod
    def _force_stream_usage(body: dict[str, Any], continuous: bool = False) -> bool:
        """Streams always ask vLLM for the usage chunk (tokens are counted from it); the
        client only sees it if it asked. Per-chunk control parts (Control.stream_part)
        need the running token count on every chunk (continuous usage), which is then
        stripped unless asked for. Returns whether the client asked for usage."""
        opts = body.get("stream_options")
        if not body.get("stream") or not (opts is None or isinstance(opts, dict)):
            return False
        wants = bool((opts or {}).get("include_usage"))
        body["stream_options"] = {**(opts or {}), "include_usage": True}
        if continuous:
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
        # controls with per-chunk parts (hallucination's per-token scores): each chunk
        # carries its tokens' parts, which need the running token count (usage)
        streams = [(n, self.resolver.controls[n]) for n in resolved.streams]
        sent = 0
        completion_tokens = 0
        # a control may end the reply (react's stop, an abstaining probe): the chunks that
        # carry a finish_reason wait for the report (they are the last ones with choices)
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
                if not streams:
                    if hold:
                        held.append(data)
                    else:
                        yield line
                    continue
                usage = data.pop("usage", None) or {}
                if wants_usage and usage:
                    data["usage"] = usage  # the client asked for usage stats
                n = usage.get("completion_tokens") or 0
                if n > sent:
                    parts = await self.reporter.token_parts(resolved, n)
                    data["control"] = {name: c.stream_part(resolved.applied[name],
                                                           parts[name][sent:n])
                                       for name, c in streams}
                    sent = n
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


def _replace_text(choice: dict[str, Any], text: str) -> None:
    """A chat message, a stream delta or a completion's text shows `text` instead."""
    if isinstance(choice.get("message"), dict):
        choice["message"]["content"] = text
    elif isinstance(choice.get("delta"), dict):
        choice["delta"]["content"] = text
    else:
        choice["text"] = text
