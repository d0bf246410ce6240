"""API-key checks (constant time) and who the caller is.

Keys come from `--api-key` (untenanted clients), `--admin-key` (the operator) and the
policy file's tenants. No keys and no policy = open server (development): every
caller is treated as the operator.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from fastapi import Request

from vsteer.server.errors import APIError
from vsteer.server.policy import PolicyFile, Tenant


@dataclass(frozen=True)
class Principal:
    admin: bool  # the operator: no tenant limits
    tenant: Tenant | None  # set when the key belongs to a policy tenant


OPERATOR = Principal(admin=True, tenant=None)


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
    def __init__(self, api_keys: list[str], admin_key: str | None,
                 policy: PolicyFile | None = None) -> None:
        self.api_keys = list(api_keys)
        self.admin_key = admin_key
        self.policy = policy

    @property
    def enabled(self) -> bool:
        return bool(self.api_keys or self.admin_key or self.policy)

    def check(self, request: Request) -> Principal:
        if not self.enabled:
            return OPERATOR
        token = _bearer(request)
        if token is not None:
            tenant = self.policy.current().tenant_for(token) if self.policy else None
            admin = self.admin_key is not None and _matches(token, [self.admin_key])
            plain = _matches(token, self.api_keys)
            if admin:
                return OPERATOR
            if tenant is not None:
                return Principal(admin=False, tenant=tenant)
            if plain:
                return Principal(admin=False, tenant=None)
        raise APIError(401, "missing or invalid API key (send 'Authorization: Bearer "
                       "<key>')", code="invalid_api_key")

    def check_admin(self, request: Request) -> Principal:
        if not self.enabled:
            return OPERATOR
        who = self.check(request)
        if self.admin_key is None:
            raise APIError(403, "artifact writes are disabled: the server has API keys but "
                           "no --admin-key")
        if not who.admin:
            raise APIError(403, "artifact writes need the admin key")
        return who
