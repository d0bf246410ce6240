"""Raw-HTTP chat helpers for the server tests (greedy, MAX_TOKENS tokens)."""

from __future__ import annotations

import asyncio

import httpx

from conftest import API_KEY, MODEL_NAME

MAX_TOKENS = 24


def body_for(prompt: str, control: dict | None = None, **extra) -> dict:
    body = {"model": MODEL_NAME, "max_tokens": MAX_TOKENS, "temperature": 0,
            "messages": [{"role": "user", "content": prompt}], **extra}
    if control is not None:
        body["control"] = control
    return body


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
    """The answers to `cases` sent concurrently (so the engine batches them)."""
    async def together():
        async with httpx.AsyncClient(timeout=300) as client:
            async def one(p, c):
                r = await client.post(server.base_url + "/v1/chat/completions",
                                      json=body_for(p, c),
                                      headers={"Authorization": f"Bearer {API_KEY}"})
                assert r.status_code == 200, r.text
                return text(r.json())
            return await asyncio.gather(*(one(p, c) for p, c in cases))

    return asyncio.run(together())
