"""Per-key request-rate limits: one token bucket per API key.

`--rate-limit RPS[:BURST]` sets the limit every non-admin key gets; a policy tenant's
`rate_limit: {rps, burst}` overrides it for that tenant's keys. Each key has its own
bucket (keys are identified by a hash, never stored). The operator's admin key and an
open server (no keys) are not limited.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

from pydantic import BaseModel, ConfigDict, Field

MAX_BUCKETS = 100_000  # idle full buckets are dropped beyond this many keys


class RateLimit(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    rps: float = Field(gt=0)  # sustained requests per second
    burst: int = Field(default=0, ge=0)  # bucket size; 0 = max(1, ceil(rps))

    @property
    def capacity(self) -> float:
        return float(self.burst or max(1, math.ceil(self.rps)))

    @classmethod
    def parse(cls, text: str) -> RateLimit:
        """'RPS' or 'RPS:BURST', e.g. '5' or '0.5:10'."""
        rps, _, burst = text.partition(":")
        try:
            return cls(rps=float(rps), burst=int(burst) if burst else 0)
        except ValueError as e:
            raise ValueError(f"invalid rate limit {text!r}: use RPS or RPS:BURST "
                             f"(e.g. 5 or 0.5:10): {e}") from None


class RateLimiter:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        # key id -> (tokens, last update, time at which the bucket is full again)
        self._buckets: dict[str, tuple[float, float, float]] = {}

    def take(self, key_id: str, limit: RateLimit) -> float:
        """Spend one request from `key_id`'s bucket: 0.0 if allowed, else the seconds
        until the next request would be."""
        now = self._clock()
        cap = limit.capacity
        with self._lock:
            tokens, last, _ = self._buckets.get(key_id, (cap, now, now))
            tokens = min(cap, tokens + (now - last) * limit.rps)
            wait = 0.0 if tokens >= 1.0 else (1.0 - tokens) / limit.rps
            if wait == 0.0:
                tokens -= 1.0
            self._buckets[key_id] = (tokens, now, now + (cap - tokens) / limit.rps)
            if len(self._buckets) > MAX_BUCKETS:  # a full bucket is the same as none
                self._buckets = {k: v for k, v in self._buckets.items() if v[2] > now}
        return wait
