"""API-key checks (constant time), who the caller is, and per-key rate limits.

Keys come from `--api-key` (untenanted clients), `--admin-key` (the operator) and the
policy file's tenants. No keys and no policy = open server (development): every
caller is treated as the operator. Non-admin keys spend one request from their rate
bucket per call (429 with Retry-After when empty).
"""

from __future__ import annotations

import hashlib
import hmac
import math
from dataclasses import dataclass

from fastapi import Request

from vsteer.server import metrics
from vsteer.server.errors import APIError
from vsteer.server.policy import PolicyFile, Tenant
from vsteer.server.rate_limit import RateLimit, RateLimiter


@dataclass(frozen=True)
class Principal:
    admin: bool  # the operator: no tenant limits
    tenant: Tenant | None  # set when the key belongs to a policy tenant
    key_id: str = ""  # a hash of the caller's key (rate buckets, never the key itself)


OPERATOR = Principal(admin=True, tenant=None)


def _key_id(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()[:24]


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
                 policy: PolicyFile | None = None, rate_limit: RateLimit | None = None
                 ) -> None:
        self.api_keys = list(api_keys)
        self.admin_key = admin_key
        self.policy = policy
        self.rate_limit = rate_limit  # every non-admin key's, unless its tenant sets one
        self.limiter = RateLimiter()

    @property
    def enabled(self) -> bool:
        return bool(self.api_keys or self.admin_key or self.policy)

    def check(self, request: Request) -> Principal:
        who = self._identify(request)
        self._spend(who)
        return who

    def _spend(self, who: Principal) -> None:
        if who.admin:
            return
        limit = (who.tenant.policy.rate_limit if who.tenant is not None else None
                 ) or self.rate_limit
        if limit is None:
            return
        wait = self.limiter.take(who.key_id, limit)
        if wait > 0:
            metrics.RATE_LIMITED.labels(who.tenant.name if who.tenant else "").inc()
            raise APIError(429, f"rate limit exceeded ({limit.rps:g} requests/s, burst "
                           f"{limit.capacity:g}); retry in {wait:.2f} s",
                           code="rate_limit_exceeded",
                           headers={"Retry-After": str(max(1, math.ceil(wait)))})

    def _identify(self, request: Request) -> Principal:
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
                return Principal(admin=False, tenant=tenant, key_id=_key_id(token))
            if plain:
                return Principal(admin=False, tenant=None, key_id=_key_id(token))
        raise APIError(401, "missing or invalid API key (send 'Authorization: Bearer "
                       "<key>')", code="invalid_api_key")

    def check_admin(self, request: Request) -> Principal:
        if not self.enabled:
            return OPERATOR
        who = self._identify(request)
        if self.admin_key is None:
            raise APIError(403, "artifact writes are disabled: the server has API keys but "
                           "no --admin-key", code="operator_only")
        if not who.admin:
            raise APIError(403, "artifact writes need the admin key", code="operator_only")
        return who
