"""API-key checks (constant time). No keys configured = open server (development)."""

from __future__ import annotations

import hmac

from fastapi import Request

from vsteer.server.errors import APIError


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return request.headers.get("api-key") or None


def _matches(token: str, keys: list[str]) -> bool:
    # Compare against every key without an early exit: time does not tell which matched.
    found = False
    for key in keys:
        found |= hmac.compare_digest(token.encode(), key.encode())
    return found


class Auth:
    def __init__(self, api_keys: list[str], admin_key: str | None) -> None:
        self.api_keys = list(api_keys)
        self.admin_key = admin_key

    @property
    def enabled(self) -> bool:
        return bool(self.api_keys or self.admin_key)

    def check(self, request: Request) -> None:
        if not self.enabled:
            return
        token = _bearer(request)
        keys = self.api_keys + ([self.admin_key] if self.admin_key else [])
        if token is None or not _matches(token, keys):
            raise APIError(401, "missing or invalid API key (send 'Authorization: Bearer "
                           "<key>')", code="invalid_api_key")

    def check_admin(self, request: Request) -> None:
        if not self.enabled:
            return
        self.check(request)
        if self.admin_key is None:
            raise APIError(403, "artifact writes are disabled: the server has API keys but "
                           "no --admin-key")
        token = _bearer(request) or ""
        if not _matches(token, [self.admin_key]):
            raise APIError(403, "artifact writes need the admin key")
