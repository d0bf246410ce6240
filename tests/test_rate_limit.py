"""Per-key token buckets (fake clock) and how Auth applies them."""

from __future__ import annotations

import pytest

from vsteer.server.auth import Auth
from vsteer.server.errors import APIError
from vsteer.server.rate_limit import RateLimit, RateLimiter


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_burst_then_refusal_then_refill():
    clock = Clock()
    lim = RateLimiter(clock)
    rule = RateLimit(rps=2.0, burst=3)
    assert [lim.take("k", rule) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert lim.take("k", rule) == pytest.approx(0.5)  # one token comes back in 0.5 s
    clock.t += 0.5
    assert lim.take("k", rule) == 0.0
    assert lim.take("other", rule) == 0.0  # every key has its own bucket
    clock.t += 100
    assert [lim.take("k", rule) for _ in range(4)][-1] > 0  # refills only up to the burst


@pytest.mark.parametrize("text,rps,cap", [("5", 5.0, 5), ("0.5", 0.5, 1), ("2:10", 2.0, 10)])
def test_parse(text, rps, cap):
    rule = RateLimit.parse(text)
    assert rule.rps == rps and rule.capacity == cap


@pytest.mark.parametrize("text", ["", "x", "0", "-1", "1:x", "nan"])
def test_parse_rejects_nonsense(text):
    with pytest.raises(ValueError, match="invalid rate limit"):
        RateLimit.parse(text)


class FakeRequest:
    def __init__(self, key: str) -> None:
        self.headers = {"authorization": f"Bearer {key}"}


def test_auth_limits_client_keys_but_not_the_admin():
    auth = Auth(["a", "b"], "admin", rate_limit=RateLimit(rps=0.001, burst=1))
    auth.check(FakeRequest("a"))
    with pytest.raises(APIError) as e:
        auth.check(FakeRequest("a"))
    assert e.value.status == 429 and e.value.code == "rate_limit_exceeded"
    assert int(e.value.headers["Retry-After"]) >= 1
    auth.check(FakeRequest("b"))  # another key, another bucket
    for _ in range(5):
        assert auth.check(FakeRequest("admin")).admin
    with pytest.raises(APIError) as e:
        auth.check(FakeRequest("nope"))
    assert e.value.status == 401  # a bad key is refused before any bucket is touched


def test_full_buckets_are_forgotten_when_there_are_too_many(monkeypatch):
    from vsteer.server import rate_limit

    monkeypatch.setattr(rate_limit, "MAX_BUCKETS", 2)
    clock = Clock()
    lim = RateLimiter(clock)
    rule = RateLimit(rps=1.0, burst=2)
    lim.take("a", rule)
    lim.take("a", rule)  # "a" is empty: full again in 2 s
    clock.t += 1.0
    lim.take("b", rule)
    lim.take("c", rule)  # three buckets: prune; none is full yet, all kept
    assert set(lim._buckets) == {"a", "b", "c"}
    clock.t += 5.0
    lim.take("d", rule)  # a, b, c are full again: forgotten (as good as fresh)
    assert set(lim._buckets) == {"d"}
    assert lim.take("a", rule) == 0.0
