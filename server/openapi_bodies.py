"""Request-body schemas for the OpenAPI spec (`/openapi.json`).

The routes read their bodies themselves (vLLM's own request classes validate them),
so FastAPI cannot infer a schema. These models document the fields clients use most,
plus `control`, and allow every other field vLLM accepts; clients and fuzzers
(schemathesis, in tests/test_fuzz.py) read them from the spec.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from vsteer.server.control_protocol import ControlSpec


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["system", "user", "assistant"]
    content: str


class _Sampling(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: str
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    seed: int | None = None
    stream: bool = False
    control: ControlSpec | None = None


class ChatCompletionBody(_Sampling):
    messages: list[ChatMessage] = Field(min_length=1)


class CompletionBody(_Sampling):
    prompt: str


class ResponsesBody(BaseModel):
    """POST /v1/responses (the OpenAI Responses API as vLLM serves it)."""

    model_config = ConfigDict(extra="allow")

    model: str
    input: str | list[dict[str, Any]]
    instructions: str | None = None
    max_output_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    stream: bool = False
    control: ControlSpec | None = None


def _inline(schema: dict[str, Any]) -> dict[str, Any]:
    """The model's JSON schema with its `$defs` references inlined (no recursion here)."""
    defs = schema.pop("$defs", {})

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return walk(dict(defs[ref.rsplit("/", 1)[1]]))
            return {k: walk(v) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    return walk(schema)


def json_body(model: type[BaseModel]) -> dict[str, Any]:
    """`openapi_extra` for a route whose JSON body `model` describes; in `control` every
    installed control's key (plugins/api.py) is listed with its own schema, those with
    modes discriminated by mode (server/mode_schema.py)."""
    from vsteer.plugins.control_registry import installed_controls

    schema = _inline(model.model_json_schema())
    if "control" in schema.get("properties", {}):
        control = schema["properties"]["control"]["anyOf"][0]
        control.setdefault("properties", {})
        for name, c in installed_controls().items():
            own = _inline(c.schema.model_json_schema())
            control["properties"][name] = own if c.modes is None else c.modes.json_schema(own)
    return {"requestBody": {"required": True, "content": {
        "application/json": {"schema": schema}}}}
