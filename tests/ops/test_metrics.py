"""Metrics: ``Cache(..., metrics=...)`` through prometheus-client (a registry per test,
scraped as text exposition) and OpenTelemetry (the SDK's in-memory reader). Values must
move as the cache works: hits, misses, sets, evictions, stampede joins and lock waits,
outages (Redis killed) and the breaker's transitions, write-behind retries and dead
letters; labels stay bounded (a key never appears in one)."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from cachekit import Cache, ConfigurationError
from cachekit.metrics import Hub, hub_of
from cachekit.testing.servers import RedisServer

prometheus_client = pytest.importorskip("prometheus_client")
from prometheus_client import CollectorRegistry, generate_latest  # noqa: E402

from cachekit.metrics.prometheus import PrometheusExporter  # noqa: E402


def _prefix() -> str:
    return f"m{uuid.uuid4().hex[:10]}"


@pytest.fixture
def exporter() -> PrometheusExporter:
    return PrometheusExporter(registry=CollectorRegistry())


def value(exporter: PrometheusExporter, name: str, **labels: str) -> float | None:
    return exporter.registry.get_sample_value(name, labels)


def until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition never became true"
        time.sleep(0.01)


# -- prometheus: memory -------------------------------------------------------------------------
def test_hits_misses_sets_evictions_move_and_show_in_the_text_exposition(
    exporter: PrometheusExporter,
) -> None:
    prefix = _prefix()
    cache = Cache("memory://?max_entries=2", prefix=prefix, metrics=exporter)
    labels = {"cache": prefix, "layer": "memory"}
    assert value(exporter, "cachekit_requests_total", result="hit", **labels) == 0
    cache.set("a", 1)
    assert cache.get("a") == 1 and cache.get("a") == 1
    assert cache.get("nope") is None

    @cache.cached(ttl=60)
    def double(x: int) -> int:
        return 2 * x

    assert double(2) == double(2) == 4  # one miss, one hit (the decorator's fast path)
    assert value(exporter, "cachekit_requests_total", result="hit", **labels) == 3
    assert value(exporter, "cachekit_requests_total", result="miss", **labels) == 2
    assert value(exporter, "cachekit_sets_total", **labels) == 2
    cache.set("b", 2)
    cache.set("c", 3)  # max_entries=2: something goes
    assert value(exporter, "cachekit_evictions_total", **labels) == 2
    assert value(exporter, "cachekit_entries", **labels) == 2
    text = generate_latest(exporter.registry).decode()
    assert f'cachekit_requests_total{{cache="{prefix}",layer="memory",result="hit"}} 3.0' in text
    assert f'cachekit_breaker_open{{cache="{prefix}"}} 0.0' in text
    assert "# TYPE cachekit_operation_duration_seconds histogram" in text
    cache.close()


def test_a_key_never_becomes_a_label_and_series_stay_few(exporter: PrometheusExporter) -> None:
    prefix = _prefix()
    cache = Cache(prefix=prefix, metrics=exporter)
    for i in range(200):
        cache.set(f"user-secret-{i}", i)
        cache.get(f"user-secret-{i}")
    text = generate_latest(exporter.registry).decode()
    assert "user-secret" not in text
    series = [line for line in text.splitlines() if line.startswith("cachekit_")]
    assert len(series) < 30, series


def test_caches_sharing_a_prefix_are_one_series_summed(exporter: PrometheusExporter) -> None:
    prefix = _prefix()
    one = Cache(prefix=prefix, metrics=exporter)
    two = one.with_options(default_ttl=5)  # same store, counters of its own
    one.set("k", 1)
    assert one.get("k") == 1 and two.get("k") == 1
    assert (
        value(exporter, "cachekit_requests_total", cache=prefix, layer="memory", result="hit") == 2
    )
    text = generate_latest(exporter.registry).decode()
    hit = f'cachekit_requests_total{{cache="{prefix}",layer="memory",result="hit"}}'
    assert text.count(hit) == 1


def test_a_dropped_cache_leaves_the_scrape(exporter: PrometheusExporter) -> None:
    import gc

    prefix = _prefix()
    cache = Cache(prefix=prefix, metrics=exporter)
    cache.get("x")
    assert (
        value(exporter, "cachekit_requests_total", cache=prefix, layer="memory", result="miss") == 1
    )
    del cache
    gc.collect()
    assert (
        value(exporter, "cachekit_requests_total", cache=prefix, layer="memory", result="miss")
        is None
    )


def test_stampede_joins_are_counted(exporter: PrometheusExporter) -> None:
    prefix = _prefix()
    cache = Cache(prefix=prefix, metrics=exporter)
    release = threading.Event()
    calls = []

    @cache.cached(ttl=60, lock=True)
    def slow(x: int) -> int:
        calls.append(x)
        release.wait(10)
        return x

    results: list[int] = []
    threads = [threading.Thread(target=lambda: results.append(slow(1))) for _ in range(3)]
    for thread in threads:
        thread.start()
    until(lambda: cache.counters.joins == 2)  # two followers wait for the leader
    release.set()
    for thread in threads:
        thread.join(10)
    assert results == [1, 1, 1] and calls == [1]
    assert value(exporter, "cachekit_stampede_joins_total", cache=prefix) == 2


def test_the_default_exporter_and_text_options() -> None:
    from prometheus_client import REGISTRY

    prefix = _prefix()
    cache = Cache(f"memory://?metrics=prometheus&prefix={prefix}")
    cache.get("x")
    labels = {"cache": prefix, "layer": "memory", "result": "miss"}
    assert REGISTRY.get_sample_value("cachekit_requests_total", labels) == 1
    env = Cache.from_env({"CACHEKIT_URL": "memory://", "CACHEKIT_METRICS": "prometheus"})
    assert env.options["metrics"] == "prometheus"
    assert Cache("memory://?metrics=none").options["metrics"] is None


@pytest.mark.parametrize("bad", ["prometheos", "1", 3, object()])
def test_a_bad_metrics_option_is_a_configuration_error(bad: Any) -> None:
    with pytest.raises(ConfigurationError, match="metrics"):
        Cache(metrics=bad)


# -- prometheus: redis, outages, the breaker ---------------------------------------------------
def test_redis_operations_are_timed_once_per_call(
    exporter: PrometheusExporter, redis_server: RedisServer
) -> None:
    prefix = _prefix()
    cache = Cache(redis_server.url, prefix=prefix, metrics=exporter)
    derived = cache.with_options(default_ttl=30)  # its own hub: each call timed once
    cache.set("k", 1)
    assert cache.get("k") == 1 and derived.get("k") == 1 and cache.get("absent") is None
    labels = {"cache": prefix, "layer": "redis"}
    count = "cachekit_operation_duration_seconds_count"
    # + 1: the first operation reads the namespace generation (a GET; the derived cache
    # shares what it read: cachekit.core.generation)
    assert value(exporter, count, operation="get", **labels) == 4
    assert value(exporter, count, operation="set", **labels) == 1
    total = value(exporter, "cachekit_operation_duration_seconds_sum", operation="get", **labels)
    assert total is not None and 0 < total < 1
    assert value(exporter, "cachekit_requests_total", result="hit", **labels) == 2
    assert value(exporter, "cachekit_requests_total", result="miss", **labels) == 1
    cache.clear()
    cache.close()


async def test_async_redis_operations_are_timed(
    exporter: PrometheusExporter, redis_server: RedisServer
) -> None:
    prefix = _prefix()
    cache = Cache(redis_server.url, prefix=prefix, metrics=exporter)
    await cache.aset("k", 1)
    assert await cache.aget("k") == 1
    labels = {"cache": prefix, "layer": "redis", "operation": "get"}
    # the aget, and the read of the namespace generation by the first operation
    assert value(exporter, "cachekit_operation_duration_seconds_count", **labels) == 2
    await cache.aclear()
    await cache.aclose()


def test_an_outage_counts_errors_skips_and_breaker_transitions(
    exporter: PrometheusExporter,
) -> None:
    server = RedisServer()
    try:
        prefix = _prefix()
        cache = Cache(server.url, prefix=prefix, metrics=exporter, timeout=0.5, retry_interval=0.05)
        cache.set("k", 1)
        assert cache.get("k") == 1
        server.kill()
        assert cache.get("k") is None  # fails open: counted as an error, trips the breaker
        assert cache.get("k") is None  # skipped: the circuit is open
        labels = {"cache": prefix}
        assert value(exporter, "cachekit_breaker_open", **labels) == 1
        assert value(exporter, "cachekit_breaker_transitions_total", state="open", **labels) == 1
        assert value(exporter, "cachekit_breaker_transitions_total", state="closed", **labels) == 0
        assert (
            value(exporter, "cachekit_requests_total", layer="redis", result="error", **labels) == 1
        )
        assert (
            value(exporter, "cachekit_requests_total", layer="redis", result="skipped", **labels)
            >= 1
        )
        failed = value(
            exporter, "cachekit_operation_duration_seconds_count",
            cache=prefix, layer="redis", operation="get",
        )  # fmt: skip
        # the skipped read never reached the backend (the first operation read the
        # namespace generation: a GET too)
        assert failed == 3
        server.start()
        until(lambda: not cache._breaker.open)
        assert value(exporter, "cachekit_breaker_open", **labels) == 0
        assert value(exporter, "cachekit_breaker_transitions_total", state="closed", **labels) == 1
        cache.close()
    finally:
        server.stop()


def test_lock_waits_across_processes_are_counted(
    exporter: PrometheusExporter, redis_server: RedisServer
) -> None:
    prefix = _prefix()
    # two caches on one Redis, as two processes would be: a flight each, one shared lock
    holder = Cache(redis_server.url, prefix=prefix)
    waiter = Cache(redis_server.url, prefix=prefix, metrics=exporter)
    started, release = threading.Event(), threading.Event()

    def slow() -> int:
        started.set()
        release.wait(10)
        return 7

    thread = threading.Thread(target=lambda: holder.get_or_set("k", slow, ttl=60, lock=True))
    thread.start()
    assert started.wait(10)
    got: list[int] = []
    other = threading.Thread(
        target=lambda: got.append(waiter.get_or_set("k", lambda: 0, ttl=60, lock=True))
    )
    other.start()
    until(lambda: waiter.counters.lock_waits == 1)
    release.set()
    thread.join(10)
    other.join(10)
    assert got == [7]
    assert value(exporter, "cachekit_lock_waits_total", cache=prefix) == 1
    holder.clear()
    holder.close()
    waiter.close()


def test_write_behind_depth_retries_and_dead_letters(exporter: PrometheusExporter) -> None:
    prefix = _prefix()
    cache = Cache(prefix=prefix, metrics=exporter)
    fail = threading.Event()
    fail.set()
    stored: list[Any] = []

    def store_many(items: dict[Any, Any]) -> None:
        if fail.is_set():
            raise RuntimeError("database down")
        stored.extend(items)

    queue = cache.write_behind(
        key="user:{}", store_many=store_many, batch_size=10, flush_interval=0.01,
        max_retries=1, retry_backoff=0.01, journal_dir=False,
    )  # fmt: skip
    queue.set(1, "a")
    labels = {"cache": prefix, "queue": "user:{}"}
    until(lambda: value(exporter, "cachekit_write_behind_dead_letters_total", **labels) == 1)
    assert value(exporter, "cachekit_write_behind_retries_total", **labels) == 1
    fail.clear()
    queue.set(2, "b")
    queue.flush(10)
    assert stored == [2]
    assert value(exporter, "cachekit_write_behind_queue_depth", **labels) == 0
    queue.close()
    cache.close()


def test_the_ratelimit_hook_reaches_the_exporters(exporter: PrometheusExporter) -> None:
    prefix = _prefix()
    cache = Cache(prefix=prefix, metrics=exporter)
    hub = hub_of(cache)
    assert isinstance(hub, Hub) and hub_of(Cache()) is None
    hub.ratelimit("api", True)
    hub.ratelimit("api", False)
    hub.ratelimit("api", False)
    labels = {"cache": prefix, "limiter": "api"}
    assert value(exporter, "cachekit_ratelimit_decisions_total", outcome="allowed", **labels) == 1
    assert value(exporter, "cachekit_ratelimit_decisions_total", outcome="limited", **labels) == 2


def test_a_listener_of_ones_own_gets_the_events(redis_server: RedisServer) -> None:
    seen: list[tuple[Any, ...]] = []

    class Mine:
        def watch(self, cache: Cache) -> None:
            seen.append(("watch", cache.prefix))

        def on_operation(self, *args: Any) -> None:
            seen.append(args)

    prefix = _prefix()
    cache = Cache(redis_server.url, prefix=prefix, metrics=Mine())
    cache.get("k")
    assert seen[0] == ("watch", prefix)
    assert seen[1][:3] == (prefix, "redis", "get") and seen[1][4] is None
    cache.close()


# -- OpenTelemetry -------------------------------------------------------------------------------
@pytest.fixture
def otel() -> Iterator[tuple[Any, Any]]:
    pytest.importorskip("opentelemetry.sdk")
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    yield provider.get_meter("cachekit-test"), reader
    provider.shutdown()


def points(reader: Any, name: str) -> list[Any]:
    data = reader.get_metrics_data()
    found = []
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                if metric.name == name:
                    found.extend(metric.data.data_points)
    return found


def test_otel_counters_and_the_db_client_duration_histogram(
    otel: tuple[Any, Any], redis_server: RedisServer
) -> None:
    meter, reader = otel
    prefix = _prefix()
    memory = Cache(prefix=prefix, metrics=meter)
    memory.set("k", 1)
    assert memory.get("k") == 1 and memory.get("x") is None
    remote = Cache(redis_server.url, prefix=prefix + "r", metrics=meter)  # the same exporter
    remote.set("k", 1)
    remote.get("k")
    requests = {
        (p.attributes["cachekit.cache"], p.attributes["cachekit.result"]): p.value
        for p in points(reader, "cachekit.requests")
    }
    assert requests[(prefix, "hit")] == 1 and requests[(prefix, "miss")] == 1
    assert requests[(prefix + "r", "hit")] == 1
    durations = [
        p for p in points(reader, "db.client.operation.duration")
        if p.attributes["cachekit.cache"] == prefix + "r"
    ]  # fmt: skip
    by_op = {p.attributes["db.operation.name"]: p.count for p in durations}
    assert by_op == {"set": 1, "get": 2}  # a GET of the namespace generation, first
    assert all(p.attributes["db.system.name"] == "redis" for p in durations)
    memory.get("k")
    again = {
        (p.attributes["cachekit.cache"], p.attributes["cachekit.result"]): p.value
        for p in points(reader, "cachekit.requests")
    }
    assert again[(prefix, "hit")] == 2  # read at collection time: the new hit is there
    breaker = [p.value for p in points(reader, "cachekit.breaker.open")
               if p.attributes["cachekit.cache"] == prefix]  # fmt: skip
    assert breaker == [0]
    remote.clear()
    remote.close()


def test_otel_global_meter_by_name() -> None:
    pytest.importorskip("opentelemetry")
    a = Cache(prefix=_prefix(), metrics="otel")
    b = Cache(prefix=_prefix(), metrics="otel")
    from cachekit.metrics.otel import exporter_for_meter

    exporter = exporter_for_meter(None)
    assert {r.cache for r in exporter.readings()} >= {a.prefix, b.prefix}


def test_a_failing_listener_never_fails_a_cache_call(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    class Broken:
        def watch(self, cache: Cache) -> None:
            pass

        def on_operation(self, *args: Any) -> None:
            raise RuntimeError("exporter bug")

        def on_ratelimit(self, *args: Any) -> None:
            raise RuntimeError("exporter bug")

    cache = Cache(redis_server.url, prefix=_prefix(), metrics=Broken())
    for _ in range(3):
        assert cache.set("k", 1) is True and cache.get("k") == 1
    hub = hub_of(cache)
    assert hub is not None
    hub.ratelimit("api", True)
    assert cache.stats()["errors"] == 0 and cache._breaker.state == "closed"
    assert sum("exporter bug" in r.getMessage() for r in caplog.records) <= 2  # once each
    cache.clear()
    cache.close()


def test_a_near_cache_reports_its_layer(
    exporter: PrometheusExporter, redis_server: RedisServer
) -> None:
    prefix = _prefix()
    cache = Cache(redis_server.url, prefix=prefix, near=True, metrics=exporter)
    cache.set("k", 1)
    assert cache.get("k") == 1
    labels = {"cache": prefix, "layer": "near"}
    # the set dropped k from the L1: this hit went to Redis (tests/ops/test_metrics_layers.py)
    assert value(exporter, "cachekit_requests_total", result="hit", **labels) == 0
    redis = {"cache": prefix, "layer": "redis"}
    assert value(exporter, "cachekit_requests_total", result="hit", **redis) == 1
    assert value(exporter, "cachekit_evictions_total", **labels) == 0
    count = value(exporter, "cachekit_operation_duration_seconds_count", operation="set", **labels)
    assert count == 1
    cache.clear()
    cache.close()


def test_stats_show_joins_and_lock_waits() -> None:
    stats = Cache().stats()
    assert stats["joins"] == 0 and stats["lock_waits"] == 0


def test_with_options_of_a_near_cache_with_metrics_keeps_one_near_layer(
    exporter: PrometheusExporter, redis_server: RedisServer
) -> None:
    from cachekit.near import NearBackend

    prefix = _prefix()
    cache = Cache(redis_server.url, prefix=prefix, near=True, metrics=exporter)
    derived = cache.with_options(default_ttl=30)
    assert isinstance(derived._backend, NearBackend)
    assert derived._backend._inner is cache._backend._inner  # the same layer, not a second
    cache.set("k", 1)
    assert derived.get("k") == 1
    cache.clear()
    cache.close()


def test_one_exporter_per_registry(exporter: PrometheusExporter) -> None:
    with pytest.raises(ConfigurationError, match="already"):
        PrometheusExporter(registry=exporter.registry)
    from cachekit.metrics.prometheus import default_exporter

    assert default_exporter() is default_exporter()
    threads = [threading.Thread(target=lambda: Cache(metrics="prometheus")) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert default_exporter().registry is prometheus_client.REGISTRY
