"""Redis frozen or gone: every decision is answered at once by ``on_error`` (allow, deny,
or an in-process limiter), the first within one socket timeout, the rest without waiting;
when Redis is back, it decides again."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator

import pytest

from cachekit import Cache
from cachekit.testing.servers import RedisServer

TIMEOUT = 0.2


@pytest.fixture
def cache(private_redis: RedisServer) -> Iterator[Cache]:
    cache = Cache(
        private_redis.url, prefix=f"o{uuid.uuid4().hex[:8]}", timeout=TIMEOUT, retry_interval=0.05
    )
    yield cache
    cache.close()


def wait_for(condition: object, timeout: float = 5.0) -> None:
    """Poll an external condition (a server coming back) until true."""
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


@pytest.mark.parametrize("on_error", ["allow", "deny", "local"])
def test_frozen_redis_is_answered_by_on_error_within_the_timeout(
    private_redis: RedisServer, cache: Cache, on_error: str
) -> None:
    limiter = cache.rate_limiter("api", rate="3/hour", on_error=on_error)
    assert limiter.hit("u").fallback is False  # Redis answers
    private_redis.freeze()
    try:
        started = time.monotonic()
        first = limiter.hit("u")
        assert time.monotonic() - started < TIMEOUT + 0.5  # one timeout, then the circuit opens
        assert first.fallback and cache.stats()["circuit"] == "open"
        costs, decisions = [], []
        for _ in range(50):
            started = time.perf_counter()
            decisions.append(limiter.hit("u"))
            costs.append(time.perf_counter() - started)
        assert max(costs) < 0.05  # no call waits on the frozen server
        allowed = [first.allowed] + [d.allowed for d in decisions]
        if on_error == "allow":
            assert all(allowed)
        elif on_error == "deny":
            assert not any(allowed) and first.retry_after > 0
        else:  # an in-process limiter with the same rule: 3 per hour, in this process
            assert sum(allowed) == 3 and allowed[:3] == [True] * 3
    finally:
        private_redis.thaw()
    wait_for(lambda: cache.stats()["circuit"] == "closed")
    back = limiter.hit("u")
    assert not back.fallback and back.allowed and back.remaining == 0  # Redis's count: 2 + 1


async def test_async_frozen_redis(private_redis: RedisServer, cache: Cache) -> None:
    limiter = cache.rate_limiter("api", rate="3/hour", on_error="deny")
    assert (await limiter.ahit("u")).allowed
    private_redis.freeze()
    try:
        started = time.monotonic()
        decisions = await asyncio.gather(*(limiter.ahit("u") for _ in range(20)))
        assert time.monotonic() - started < TIMEOUT + 0.5
        assert all(d.fallback and not d.allowed for d in decisions)
        assert await limiter.areset("u") is False  # could not reach Redis; says so
    finally:
        private_redis.thaw()


def test_killed_redis_allows_by_default(private_redis: RedisServer, cache: Cache) -> None:
    limiter = cache.rate_limiter("api", rate="1/hour")
    assert limiter.hit("u").allowed and not limiter.hit("u").allowed
    private_redis.kill()
    decision = limiter.hit("u")
    assert decision.allowed and decision.fallback  # the limit is off, the app is not
    private_redis.start()
    wait_for(lambda: cache.stats()["circuit"] == "closed")
    # the restarted server is empty: the identity starts afresh, and Redis limits it again
    back = limiter.hit("u")
    assert back.allowed and not back.fallback
    assert not limiter.hit("u").allowed


def test_decorator_during_outage(private_redis: RedisServer, cache: Cache) -> None:
    calls = []

    @cache.rate_limit("1/hour", key="{user}", on_error="allow")
    def view(user: str) -> str:
        calls.append(user)
        return user

    private_redis.freeze()
    try:
        started = time.monotonic()
        assert [view("a") for _ in range(5)] == ["a"] * 5
        assert time.monotonic() - started < TIMEOUT + 0.5
    finally:
        private_redis.thaw()
    assert calls == ["a"] * 5


@pytest.mark.parametrize(("on_error", "status"), [("allow", 200), ("deny", 429)])
def test_middleware_answers_at_once_while_redis_is_frozen(
    private_redis: RedisServer, cache: Cache, on_error: str, status: int
) -> None:
    import warnings

    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    from cachekit.integrations.starlette import RateLimitMiddleware

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from starlette.testclient import TestClient

    async def hello(request: object) -> PlainTextResponse:
        return PlainTextResponse("hello")

    app = Starlette(routes=[Route("/", hello)])
    app.add_middleware(RateLimitMiddleware, cache=cache, rate="100/minute", on_error=on_error)
    with TestClient(app) as client:
        assert client.get("/").status_code == 200
        private_redis.freeze()
        try:
            started = time.monotonic()
            statuses = [client.get("/").status_code for _ in range(20)]
            assert time.monotonic() - started < TIMEOUT + 1.0  # one timeout, not 20
        finally:
            private_redis.thaw()
    assert statuses == [status] * 20
