"""Metrics: requests by layer. A near cache's lookups served by its in-process L1 count as
``layer="near"``, those that went to Redis behind it (hits, misses) as ``layer="redis"``;
``memory://`` with ``near=True`` (where near adds nothing) is ``layer="memory"``. Checked
in the Prometheus text exposition (and OpenTelemetry) against a real redis-server."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from cachekit import Cache
from cachekit.near import NearBackend
from cachekit.testing.servers import RedisServer

pytest.importorskip("prometheus_client")
from prometheus_client import CollectorRegistry, generate_latest

from cachekit.metrics.prometheus import PrometheusExporter

# a long serving window: the L1 keeps serving on a loaded machine (the link PINGs every
# max_stale / 4), so every read after the fill is an L1 hit
NEAR = {"max_stale": 60.0}


def _prefix() -> str:
    return f"l{uuid.uuid4().hex[:10]}"


@pytest.fixture
def exporter() -> PrometheusExporter:
    return PrometheusExporter(registry=CollectorRegistry())


def requests(exporter: PrometheusExporter, prefix: str) -> dict[tuple[str, str], float]:
    """``{(layer, result): value}`` of ``cachekit_requests_total`` for ``prefix``, parsed
    from the text exposition a scrape returns."""
    text = generate_latest(exporter.registry).decode()
    found: dict[tuple[str, str], float] = {}
    pattern = r"^cachekit_requests_total\{([^}]*)\} (\S+)$"
    for labels, value in re.findall(pattern, text, re.MULTILINE):
        parsed = dict(re.findall(r'(\w+)="([^"]*)"', labels))
        if parsed["cache"] == prefix:
            key = (parsed["layer"], parsed["result"])
            assert key not in found, f"duplicate series {key} in\n{text}"
            found[key] = float(value)
    return found


def caught_up(cache: Cache) -> None:
    """Every invalidation sent so far (the echo of this process's own writes included)
    has reached the L1: the next fill stays there."""
    backend = cache._backend
    assert isinstance(backend, NearBackend)
    assert backend.layer.link.caught_up(5.0), "the invalidation link did not answer"


@pytest.fixture
def near_cache(exporter: PrometheusExporter, redis_server: RedisServer) -> Iterator[Cache]:
    cache = Cache(redis_server.url, prefix=_prefix(), near=NEAR, metrics=exporter)
    yield cache
    cache.clear()
    cache.close()


def _miss_then_fill(cache: Cache) -> None:
    """One miss (Redis), one Redis hit filling the L1."""
    assert cache.get("k") is None  # a miss: went to Redis (and started the link)
    cache.set("k", 1)
    caught_up(cache)  # the link up, the set's invalidation in: the L1 serves what it fills
    assert cache.get("k") == 1  # a Redis hit, stored in the L1


def test_l1_hits_are_near_what_went_to_redis_is_redis(
    exporter: PrometheusExporter, near_cache: Cache
) -> None:
    prefix = near_cache.prefix
    _miss_then_fill(near_cache)
    n = 7
    for _ in range(n):
        assert near_cache.get("k") == 1  # served by the L1
    assert near_cache.stats()["near_hits"] == n
    counts = requests(exporter, prefix)
    assert counts[("near", "hit")] == n
    assert counts[("redis", "hit")] == 1
    assert counts[("redis", "miss")] == 1
    assert ("near", "miss") not in counts  # an L1 miss goes on to Redis: counted there
    assert counts[("redis", "error")] == 0 and counts[("redis", "skipped")] == 0
    assert (
        sum(v for (_, result), v in counts.items() if result == "hit")
        == (near_cache.stats()["hits"])
    )


async def test_async_gets_and_cached_hits_from_the_l1_are_near(
    exporter: PrometheusExporter, near_cache: Cache
) -> None:
    prefix = near_cache.prefix
    _miss_then_fill(near_cache)
    for _ in range(3):
        assert await near_cache.aget("k") == 1  # the async path: the backend's L1 lookup
    calls = []

    @near_cache.cached(ttl=60)
    def double(x: int) -> int:
        calls.append(x)
        return 2 * x

    assert double(4) == 8  # a miss, computed and set
    caught_up(near_cache)
    assert double(4) == 8  # a Redis hit (the set dropped it from the L1), filling the L1
    for _ in range(5):
        assert double(4) == 8  # the @cached fast path's L1 reader
    assert calls == [4]
    counts = requests(exporter, prefix)
    assert counts[("near", "hit")] == 3 + 5
    assert counts[("redis", "hit")] == 1 + 1
    assert counts[("redis", "miss")] == 1 + 1


def test_with_options_copies_share_one_l1_counted_once(
    exporter: PrometheusExporter, near_cache: Cache
) -> None:
    derived = near_cache.with_options(default_ttl=30)  # the same prefix, the same L1
    _miss_then_fill(near_cache)
    for _ in range(4):
        assert derived.get("k") == 1
    for _ in range(2):
        assert near_cache.get("k") == 1
    counts = requests(exporter, near_cache.prefix)
    assert counts[("near", "hit")] == 6  # not 12: one layer's count, read by both copies
    assert counts[("redis", "hit")] == 1 and counts[("redis", "miss")] == 1


def test_a_near_and_a_plain_redis_cache_on_one_prefix_are_one_redis_series(
    exporter: PrometheusExporter, near_cache: Cache, redis_server: RedisServer
) -> None:
    plain = Cache(redis_server.url, prefix=near_cache.prefix, metrics=exporter)
    _miss_then_fill(near_cache)
    assert near_cache.get("k") == 1  # L1
    assert plain.get("k") == 1 and plain.get("nope") is None
    counts = requests(exporter, near_cache.prefix)  # asserts no duplicate series
    assert counts[("near", "hit")] == 1
    assert counts[("redis", "hit")] == 1 + 1
    assert counts[("redis", "miss")] == 1 + 1
    plain.close()


def test_memory_with_near_is_the_memory_layer(exporter: PrometheusExporter) -> None:
    prefix = _prefix()
    cache = Cache("memory://", prefix=prefix, near=True, metrics=exporter)
    cache.set("a", 1)
    for _ in range(3):
        assert cache.get("a") == 1
    assert cache.get("nope") is None
    counts = requests(exporter, prefix)
    assert counts[("memory", "hit")] == 3 and counts[("memory", "miss")] == 1
    assert {layer for layer, _ in counts} == {"memory"}
    text = generate_latest(exporter.registry).decode()
    assert 'layer="near"' not in text


def test_otel_requests_by_layer(redis_server: RedisServer) -> None:
    pytest.importorskip("opentelemetry.sdk")
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    meter = provider.get_meter("cachekit-test")
    cache = Cache(redis_server.url, prefix=_prefix(), near=NEAR, metrics=meter)
    memory = Cache("memory://", prefix=_prefix(), near=True, metrics=meter)
    try:
        _miss_then_fill(cache)
        for _ in range(3):
            assert cache.get("k") == 1
        memory.set("a", 1)
        assert memory.get("a") == 1
        found: dict[tuple[str, str, str], Any] = {}
        for resource in reader.get_metrics_data().resource_metrics:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    if metric.name == "cachekit.requests":
                        for p in metric.data.data_points:
                            a = p.attributes
                            key = (a["cachekit.cache"], a["cachekit.layer"], a["cachekit.result"])
                            found[key] = p.value
        assert found[(cache.prefix, "near", "hit")] == 3
        assert found[(cache.prefix, "redis", "hit")] == 1
        assert found[(cache.prefix, "redis", "miss")] == 1
        assert found[(memory.prefix, "memory", "hit")] == 1
        assert not any(k[0] == memory.prefix and k[1] != "memory" for k in found)
    finally:
        cache.clear()
        cache.close()
        provider.shutdown()


async def test_a_corrupt_entry_served_by_the_l1_is_an_error_not_a_near_hit(
    exporter: PrometheusExporter, near_cache: Cache, redis_server: RedisServer
) -> None:
    import redis

    raw = redis.Redis.from_url(redis_server.url)
    raw.set(near_cache._ns.key("bad"), b"\xff not an entry")
    raw.close()
    assert await near_cache.aget("bad") is None  # read from Redis, unreadable: kept in the L1
    caught_up(near_cache)
    for _ in range(3):
        assert await near_cache.aget("bad") is None  # the L1 serves the bytes: corrupt again
    stats = near_cache.stats()
    assert stats["hits"] == 0 and stats["corrupt"] >= 1
    counts = requests(exporter, near_cache.prefix)
    assert counts[("near", "hit")] == 0 and counts[("redis", "hit")] == 0  # never negative
    assert counts[("redis", "error")] == stats["corrupt"]
