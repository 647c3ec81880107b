"""Rate-limit outcomes in the metrics: every hit (sync, async, the decorator) is reported
once to the cache's hub, as ``allowed``, ``limited`` or ``fallback`` (Redis could not be
asked and ``on_error`` decided), labelled with the limiter's name and never the identity;
peeks take nothing and are not counted. Shown in the Prometheus text exposition
(``cachekit_ratelimit_decisions_total``) and through the OpenTelemetry in-memory reader
(``cachekit.ratelimit.decisions``), on the memory backend and on a real redis-server."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest

from cachekit import Cache, RateLimited
from cachekit.testing.servers import RedisServer

pytest.importorskip("prometheus_client")
from prometheus_client import CollectorRegistry, generate_latest

from cachekit.metrics.prometheus import PrometheusExporter
from tests.ops import test_metrics
from tests.ops.test_metrics import points

SERIES = "cachekit_ratelimit_decisions_total"


def _prefix() -> str:
    return f"rm{uuid.uuid4().hex[:10]}"


@pytest.fixture
def exporter() -> PrometheusExporter:
    return PrometheusExporter(registry=CollectorRegistry())


@pytest.fixture(params=["memory", "redis"])
def url(request: pytest.FixtureRequest) -> str:
    if request.param == "memory":
        return "memory://"
    server: RedisServer = request.getfixturevalue("redis_server")
    return server.url


def count(exporter: PrometheusExporter, cache: str, limiter: str, outcome: str) -> float:
    found = exporter.registry.get_sample_value(
        SERIES, {"cache": cache, "limiter": limiter, "outcome": outcome}
    )
    return 0.0 if found is None else found


# -- Prometheus ---------------------------------------------------------------------------------
def test_allowed_and_limited_hits_move_the_counter(exporter: PrometheusExporter, url: str) -> None:
    prefix = _prefix()
    cache = Cache(url, prefix=prefix, metrics=exporter)
    limiter = cache.rate_limiter("login", rate="2/hour")
    identity = f"secret-user-{uuid.uuid4().hex}"
    try:
        assert [limiter.hit(identity).allowed for _ in range(3)] == [True, True, False]
        assert count(exporter, prefix, "login", "allowed") == 2
        assert count(exporter, prefix, "login", "limited") == 1
        assert count(exporter, prefix, "login", "fallback") == 0
        assert limiter.peek(identity).allowed is False  # a peek takes nothing: not counted
        assert limiter.reset(identity) is True
        assert count(exporter, prefix, "login", "limited") == 1
        assert limiter.hit(identity).allowed  # a full allowance again
        assert count(exporter, prefix, "login", "allowed") == 3
        text = generate_latest(exporter.registry).decode()
        line = f'{SERIES}{{cache="{prefix}",limiter="login",outcome="limited"}} 1.0'
        assert line in text
        assert identity not in text  # the identity is never a label
    finally:
        limiter.reset(identity)
        cache.close()


async def test_async_hits_are_counted_once_each(exporter: PrometheusExporter, url: str) -> None:
    prefix = _prefix()
    cache = Cache(url, prefix=prefix, metrics=exporter)
    limiter = cache.rate_limiter("api", rate="3/hour", algorithm="fixed")
    try:
        decisions = [await limiter.ahit("u") for _ in range(5)]
        assert [d.allowed for d in decisions] == [True, True, True, False, False]
        assert (await limiter.apeek("u")).allowed is False
        assert count(exporter, prefix, "api", "allowed") == 3
        assert count(exporter, prefix, "api", "limited") == 2
    finally:
        await limiter.areset("u")
        await cache.aclose()


def test_the_decorator_counts_refused_calls_as_limited(
    exporter: PrometheusExporter, url: str
) -> None:
    prefix = _prefix()
    cache = Cache(url, prefix=prefix, metrics=exporter)
    ran = []

    @cache.rate_limit("1/hour", key="{user}", name="send")
    def send(user: str) -> str:
        ran.append(user)
        return user

    try:
        assert send("a") == "a" and send("b") == "b"
        with pytest.raises(RateLimited):
            send("a")
        assert ran == ["a", "b"]
        assert count(exporter, prefix, "send", "allowed") == 2
        assert count(exporter, prefix, "send", "limited") == 1
    finally:
        send.limiter.reset("a")  # type: ignore[attr-defined]
        send.limiter.reset("b")  # type: ignore[attr-defined]
        cache.close()


def test_limiters_and_caches_get_their_own_series(exporter: PrometheusExporter) -> None:
    one, two = _prefix(), _prefix()
    a = Cache(prefix=one, metrics=exporter)
    b = Cache(prefix=two, metrics=exporter)  # the same exporter, another cache
    assert a.rate_limiter("x", rate="1/hour").hit("u").allowed
    assert not a.rate_limiter("x", rate="1/hour").hit("u").allowed  # same name: same limit
    assert a.rate_limiter("y", rate="1/hour").hit("u").allowed
    assert b.rate_limiter("x", rate="1/hour").hit("u").allowed
    assert (count(exporter, one, "x", "allowed"), count(exporter, one, "x", "limited")) == (1, 1)
    assert count(exporter, one, "y", "allowed") == 1 and count(exporter, two, "x", "allowed") == 1
    assert count(exporter, two, "x", "limited") == 0
    for _ in range(50):  # many identities: still one series per (cache, limiter, outcome)
        a.rate_limiter("x", rate="1/hour").hit(uuid.uuid4().hex)
    samples = [
        s for family in exporter.registry.collect() if family.name == SERIES.removesuffix("_total")
        for s in family.samples if s.name == SERIES
    ]  # fmt: skip
    assert len(samples) == 4  # (one, x, allowed|limited), (one, y, allowed), (two, x, allowed)
    a.close()
    b.close()


# -- Redis frozen: on_error decides, counted as fallback ----------------------------------------
def test_an_outage_decision_is_counted_as_fallback(
    exporter: PrometheusExporter, private_redis: RedisServer
) -> None:
    prefix = _prefix()
    cache = Cache(
        private_redis.url, prefix=prefix, timeout=0.2, retry_interval=0.05, metrics=exporter
    )
    limiter = cache.rate_limiter("api", rate="1/hour", on_error="allow")
    assert limiter.hit("u").allowed and not limiter.hit("u").allowed  # Redis decides
    private_redis.freeze()
    try:
        first = limiter.hit("u")  # one socket timeout, then the circuit is open
        rest = [limiter.hit("u") for _ in range(4)]  # decided at once
        assert first.fallback and first.allowed and all(d.fallback and d.allowed for d in rest)
        assert cache.stats()["circuit"] == "open"
        assert count(exporter, prefix, "api", "fallback") == 5
        assert count(exporter, prefix, "api", "allowed") == 1  # the outage is not "allowed"
        assert count(exporter, prefix, "api", "limited") == 1
    finally:
        private_redis.thaw()
    deadline = time.monotonic() + 5
    while cache.stats()["circuit"] != "closed":  # the breaker's probe, on its own clock
        assert time.monotonic() < deadline, "the circuit never closed"
        time.sleep(0.01)
    back = limiter.hit("u")
    assert not back.fallback and not back.allowed  # Redis's count again
    assert count(exporter, prefix, "api", "limited") == 2
    assert count(exporter, prefix, "api", "fallback") == 5
    cache.close()


# -- OpenTelemetry ------------------------------------------------------------------------------
otel = test_metrics.otel  # the fixture: a MeterProvider with an in-memory reader


def otel_decisions(reader: Any, cache: str) -> dict[tuple[str, str], int]:
    return {
        (p.attributes["cachekit.ratelimit.limiter"], p.attributes["cachekit.ratelimit.outcome"]): (
            p.value
        )
        for p in points(reader, "cachekit.ratelimit.decisions")
        if p.attributes["cachekit.cache"] == cache
    }


def test_otel_counts_allowed_and_limited(otel: tuple[Any, Any], url: str) -> None:
    meter, reader = otel
    prefix = _prefix()
    cache = Cache(url, prefix=prefix, metrics=meter)
    limiter = cache.rate_limiter("search", rate="2/hour", algorithm="sliding")
    identity = f"who-{uuid.uuid4().hex}"
    try:
        assert [limiter.hit(identity).allowed for _ in range(4)] == [True, True, False, False]
        limiter.peek(identity)
        assert otel_decisions(reader, prefix) == {
            ("search", "allowed"): 2,
            ("search", "limited"): 2,
        }
        assert limiter.hit(identity).allowed is False
        assert otel_decisions(reader, prefix)[("search", "limited")] == 3
    finally:
        limiter.reset(identity)
        cache.close()


def test_otel_counts_an_outage_as_fallback(
    otel: tuple[Any, Any], private_redis: RedisServer
) -> None:
    meter, reader = otel
    prefix = _prefix()
    cache = Cache(private_redis.url, prefix=prefix, timeout=0.2, retry_interval=0.05, metrics=meter)
    limiter = cache.rate_limiter("api", rate="5/hour", on_error="allow")
    assert limiter.hit("u").allowed
    private_redis.freeze()
    try:
        assert all(limiter.hit("u").fallback for _ in range(3))
    finally:
        private_redis.thaw()
    assert otel_decisions(reader, prefix) == {("api", "allowed"): 1, ("api", "fallback"): 3}
    cache.close()


# -- listeners of one's own; no listener, no cost -----------------------------------------------
def test_a_listener_of_ones_own_gets_each_decision_once() -> None:
    calls: list[tuple[Any, ...]] = []

    class Mine:
        def watch(self, cache: Cache) -> None:
            pass

        def on_ratelimit(self, *args: Any) -> None:
            calls.append(args)

    prefix = _prefix()
    cache = Cache(prefix=prefix, metrics=Mine())
    limiter = cache.rate_limiter("api", rate="1/hour")
    limiter.hit("u")
    limiter.hit("u")
    limiter.peek("u")
    assert calls == [(prefix, "api", True, False), (prefix, "api", False, False)]


def test_no_listener_means_no_reporting_path() -> None:
    class DurationsOnly:
        def watch(self, cache: Cache) -> None:
            pass

        def on_operation(self, *args: Any) -> None:
            pass

    for cache in (Cache(prefix=_prefix()), Cache(prefix=_prefix(), metrics=DurationsOnly())):
        limiter = cache.rate_limiter("api", rate="1/hour")
        assert limiter._hub is None  # a hit checks one attribute and reports nothing
        assert limiter.hit("u").allowed and not limiter.hit("u").allowed


def test_a_broken_listener_never_fails_a_decision(caplog: pytest.LogCaptureFixture) -> None:
    class Broken:
        def watch(self, cache: Cache) -> None:
            pass

        def on_ratelimit(self, *args: Any) -> None:
            raise RuntimeError("exporter bug in on_ratelimit")

    limiter = Cache(prefix=_prefix(), metrics=Broken()).rate_limiter("api", rate="2/hour")
    assert [limiter.hit("u").allowed for _ in range(3)] == [True, True, False]
    assert sum("exporter bug in on_ratelimit" in r.getMessage() for r in caplog.records) <= 1
