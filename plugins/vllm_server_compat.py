"""Every touch point of vsteer's API server with vLLM internals: its OpenAI request and
error classes, its `serve` argument parser, engine client and serving state.

`tests/test_vllm_compat.py` checks each one against the installed vLLM and fails
loudly (naming the symbol) when an upgrade moves it. The worker side's touch points
are in plugins/vllm_compat.py.
"""

from __future__ import annotations

from typing import Any


def openai_request_classes() -> tuple[type, type]:
    """vLLM's pydantic models of chat and completion requests."""
    from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest
    from vllm.entrypoints.openai.completion.protocol import CompletionRequest

    return ChatCompletionRequest, CompletionRequest


def responses_request_class() -> type:
    """vLLM's pydantic model of a Responses API request (POST /v1/responses)."""
    from vllm.entrypoints.openai.responses.protocol import ResponsesRequest

    return ResponsesRequest


def error_response_class() -> type:
    from vllm.entrypoints.serve.engine.protocol import ErrorResponse

    return ErrorResponse


def client_error_class() -> type[Exception]:
    """vLLM's base of request-caused errors; its request models' validators raise it
    (e.g. an empty completion prompt), and pydantic passes it through unwrapped."""
    from vllm.exceptions import VLLMClientError

    return VLLMClientError


def vllm_arg_parser():
    """vLLM's own `serve` argument parser (engine and frontend options)."""
    from vllm.entrypoints.launchers.cli_args import make_arg_parser
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    return make_arg_parser(FlexibleArgumentParser(prog="vsteer serve"))


def engine_args_from_cli(args: Any, additional_config: dict) -> Any:
    from vllm.engine.arg_utils import AsyncEngineArgs

    engine_args = AsyncEngineArgs.from_cli_args(args)
    engine_args.additional_config = {**(engine_args.additional_config or {}),
                                     **additional_config}
    return engine_args


def build_engine_client(engine_args: Any):
    """Async context manager yielding vLLM's AsyncLLM engine client."""
    from vllm.entrypoints.launchers.api_server.entry import (
        build_async_engine_client_from_engine_args,
    )

    return build_async_engine_client_from_engine_args(engine_args)


async def init_serving_state(engine_client: Any, state: Any, args: Any) -> None:
    """vLLM's serving classes (chat, completion, models) onto `state`."""
    from vllm.entrypoints.launchers.api_server.app_state import init_app_state

    tasks = await engine_client.get_supported_tasks()
    await init_app_state(engine_client, state, args, tasks)


async def listen_for_disconnect(raw_request: Any) -> None:
    from vllm.entrypoints.serve.utils.api_utils import listen_for_disconnect as listen

    await listen(raw_request)


def shutdown_offline_engine(llm: Any, attempts: int = 3) -> None:
    """Stop an offline `LLM`'s engine core now, not at interpreter exit. vLLM 0.32's
    kill_process_tree asks psutil for the name of each child it kills, which raises
    NoSuchProcess when that child has just exited (a race seen in CI); the processes
    still alive are then killed by trying again."""
    import psutil

    for attempt in range(attempts):
        try:
            llm.llm_engine.engine_core.shutdown()
            return
        except psutil.NoSuchProcess:
            if attempt == attempts - 1:
                raise
