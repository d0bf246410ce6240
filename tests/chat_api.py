"""Raw-HTTP chat helpers for the server tests (greedy, MAX_TOKENS tokens)."""

from __future__ import annotations

import asyncio

import httpx

from conftest import ADMIN_KEY, API_KEY, MODEL_NAME

MAX_TOKENS = 24


def body_for(prompt: str, control: dict | None = None, **extra) -> dict:
    body = {"model": MODEL_NAME, "max_tokens": MAX_TOKENS, "temperature": 0,
            "messages": [{"role": "user", "content": prompt}], **extra}
    if control is not None:
        body["control"] = control
    return body


def completion_body_for(prompt: str, control: dict | None = None) -> dict:
    """The /v1/completions twin of body_for (raw prompt text, no chat template)."""
    body = body_for(prompt, control)
    del body["messages"]
    return {**body, "prompt": prompt}


def post(server, body: dict, key: str | None = API_KEY) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.post(server.base_url + "/v1/chat/completions", headers=headers, timeout=300,
                      json={"model": MODEL_NAME, "max_tokens": MAX_TOKENS, "temperature": 0,
                            **body})


def ask(server, prompt: str, control: dict | None = None, key: str | None = API_KEY) -> dict:
    r = post(server, body_for(prompt, control), key)
    assert r.status_code == 200, r.text
    return r.json()


def text(resp: dict) -> str:
    return resp["choices"][0]["message"]["content"]


def ask_together(server, cases: list[tuple[str, dict | None]]) -> list[str]:
    """The answers to `cases` from a run proven to share engine steps."""
    return [text(r) for r in ask_together_shared(server, cases)]


def ask_together_shared(server, cases: list[tuple[str, dict | None]], attempts: int = 4,
                        path: str = "/v1/chat/completions") -> list[dict]:
    """The responses to `cases` sent concurrently, from a run that the worker's own step
    reports show really ran together (assert_shared_steps). Concurrent HTTP requests
    may still reach the engine one step apart (a reply that ends in its prefill step,
    like an abstaining one, then never shares a step), so the batch is re-sent, up to
    `attempts` times, until one run is proven shared; the last run's evidence fails."""
    for attempt in range(attempts):
        replies = ask_together_full(server, cases, path)
        try:
            assert_shared_steps(server, replies)
            return replies
        except AssertionError:
            if attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")


def ask_together_full(server, cases: list[tuple[str, dict | None]],
                      path: str = "/v1/chat/completions") -> list[dict]:
    """The responses to `cases` sent concurrently (so the engine may batch them)."""
    async def together():
        async with httpx.AsyncClient(timeout=300) as client:
            async def one(p, c):
                body = (body_for(p, c) if path.endswith("/chat/completions")
                        else completion_body_for(p, c))
                r = await client.post(server.base_url + path, json=body,
                                      headers={"Authorization": f"Bearer {API_KEY}"})
                assert r.status_code == 200, r.text
                return r.json()
            return await asyncio.gather(*(one(p, c) for p, c in cases))

    return asyncio.run(together())


def trace(server, request_id: str) -> list[list[int]]:
    """[[step, requests in it], ...] of a controlled reply's first choice, as the worker
    reported them (GET /v1/vsteer/trace, admin key)."""
    r = httpx.get(f"{server.base_url}/v1/vsteer/trace/{request_id}",
                  headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=30)
    assert r.status_code == 200, r.text
    c = r.json()["choices"][0]
    return [[s, b] for s, b in zip(c["steps"], c["batch"], strict=True)]


def assert_shared_steps(server, replies: list[dict]) -> None:
    """Worker-side evidence that concurrent replies ran in the same engine steps: the
    controlled ones share a step, and some step of each held every reply at once."""
    traces = [trace(server, r["control"]["request_id"]) for r in replies
              if (r.get("control") or {}).get("request_id")]
    assert traces, "no controlled reply to trace"
    steps = [{s for s, _ in t} for t in traces]
    common = set.intersection(*steps)
    assert common, f"the controlled replies never shared an engine step: {traces}"
    assert all(max(b for _, b in t) >= len(replies) for t in traces), (
        f"no step held all {len(replies)} replies at once: {traces}")
