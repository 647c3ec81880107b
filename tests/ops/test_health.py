"""``cache.health()`` / ``await cache.ahealth()`` and the framework endpoints: ok while the
backend answers; not ok, and still fast (< 50 ms), with Redis frozen or killed or the
breaker open; polling a frozen Redis does not pile up pings; endpoints answer 200 then 503."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from cachekit import Cache
from cachekit.testing.servers import RedisServer


def _prefix() -> str:
    return f"h{uuid.uuid4().hex[:10]}"


def until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition never became true"
        time.sleep(0.01)


@pytest.fixture
def server() -> Iterator[RedisServer]:
    """A redis-server of the test's own, to freeze and kill."""
    server = RedisServer()
    yield server
    server.stop()


def _timed(call: Callable[[], dict[str, Any]]) -> tuple[dict[str, Any], float]:
    started = time.perf_counter()
    report = call()
    return report, time.perf_counter() - started


def test_a_memory_cache_is_healthy_and_says_what_it_holds() -> None:
    cache = Cache(prefix=_prefix())
    cache.set("k", 1)
    report = cache.health()
    assert report["ok"] is True and report["error"] is None
    assert report["backend"] == "memory" and report["breaker"] == "closed"
    assert report["entries"] == {"memory": 1} and report["latency_ms"] >= 0
    json.dumps(report)  # JSON-ready as it is


def test_redis_health_reports_latency_queues_and_stays_json(server: RedisServer) -> None:
    cache = Cache(server.url, prefix=_prefix())
    queue = cache.write_behind(key="u:{}", store_many=lambda items: None, journal_dir=False)
    report = cache.health()
    assert report["ok"] is True, report
    assert 0 < report["latency_ms"] < 1000
    assert report["write_behind"] == {"u:{}": 0} and report["pending_invalidations"] == 0
    json.dumps(report)
    queue.close()
    cache.close()


def test_a_frozen_redis_answers_fast_and_not_ok_without_piling_up_pings(
    server: RedisServer,
) -> None:
    cache = Cache(server.url, prefix=_prefix(), timeout=5.0)
    assert cache.health()["ok"]
    server.freeze()
    try:
        for _ in range(5):
            report, seconds = _timed(cache.health)
            assert seconds < 0.05, seconds
            assert report["ok"] is False and "no answer" in report["error"]
            assert report["latency_ms"] is None
        probes = [t for t in threading.enumerate() if t.name == "cachekit-health"]
        assert len(probes) == 1  # the one ping still waiting, reused by every check
    finally:
        server.thaw()
    until(lambda: cache.health()["ok"])
    assert cache._breaker.state == "closed"  # a health check never trips the breaker
    cache.close()


async def test_ahealth_under_freeze_is_fast_and_not_ok(server: RedisServer) -> None:
    cache = Cache(server.url, prefix=_prefix(), timeout=5.0)
    assert (await cache.ahealth())["ok"]
    server.freeze()
    try:
        for _ in range(3):
            started = time.perf_counter()
            report = await cache.ahealth()
            assert time.perf_counter() - started < 0.05
            assert report["ok"] is False and "no answer" in report["error"]
        assert cache.__dict__["_health_task"].done() is False  # one ping, reused
    finally:
        server.thaw()
    deadline = time.monotonic() + 10
    while not (await cache.ahealth())["ok"]:
        assert time.monotonic() < deadline
    await cache.aclose()


def test_a_killed_redis_and_an_open_breaker_are_not_ok(server: RedisServer) -> None:
    cache = Cache(server.url, prefix=_prefix(), timeout=0.5, retry_interval=0.05)
    cache.set("k", 1)
    server.kill()
    report, seconds = _timed(cache.health)
    assert report["ok"] is False and report["error"] and seconds < 0.05
    cache.get("k")  # the outage trips the breaker
    report, seconds = _timed(cache.health)
    assert report["ok"] is False and report["breaker"] == "open" and seconds < 0.05
    assert "circuit breaker" in report["error"]
    server.start()
    until(lambda: cache.health()["ok"])
    cache.close()


# -- endpoints -----------------------------------------------------------------------------------
async def test_starlette_route_answers_200_then_503(server: RedisServer) -> None:
    pytest.importorskip("starlette")
    import httpx
    from cachekit.integrations.starlette.health import health_route
    from starlette.applications import Starlette

    cache = Cache(server.url, prefix=_prefix(), timeout=5.0)
    app = Starlette(routes=[health_route(cache)])
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
        ok = await client.get("/healthz")
        assert ok.status_code == 200 and ok.json()["ok"] is True
        assert ok.headers["cache-control"] == "no-store"
        server.freeze()
        try:
            started = time.perf_counter()
            down = await client.get("/healthz")
            assert time.perf_counter() - started < 0.05
            assert down.status_code == 503 and down.json()["ok"] is False
        finally:
            server.thaw()
    await cache.aclose()


def test_flask_blueprint_answers_200_then_503(server: RedisServer) -> None:
    pytest.importorskip("flask")
    from cachekit.integrations.flask.health import health_blueprint
    from flask import Flask

    cache = Cache(server.url, prefix=_prefix(), timeout=0.5, retry_interval=0.05)
    app = Flask(__name__)
    app.register_blueprint(health_blueprint(cache, "/ready"))
    client = app.test_client()
    ok = client.get("/ready")
    assert ok.status_code == 200 and ok.get_json()["backend"] == "redis backend"
    server.kill()
    down = client.get("/ready")
    assert down.status_code == 503 and down.get_json()["ok"] is False
    cache.close()


def test_flask_blueprint_takes_a_flaskcache() -> None:
    pytest.importorskip("flask")
    from cachekit.integrations.flask import FlaskCache
    from cachekit.integrations.flask.health import health_blueprint
    from flask import Flask

    app = Flask(__name__)
    fcache = FlaskCache(app)
    app.register_blueprint(health_blueprint(fcache))
    answer = app.test_client().get("/healthz")
    assert answer.status_code == 200 and answer.get_json()["backend"] == "memory"


def test_django_view_answers_200_then_503(server: RedisServer) -> None:
    pytest.importorskip("django")
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from django_settings import configure

    configure(__name__)
    from cachekit.integrations.django import close_shared_caches
    from cachekit.integrations.django.health import health_view
    from django.test import RequestFactory, override_settings

    from cachekit.exceptions import ConfigurationError

    caches = {
        "default": {"BACKEND": "cachekit.integrations.django.CachekitCache",
                    "LOCATION": server.url, "OPTIONS": {"timeout": 0.5}},
        "plain": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
    }  # fmt: skip
    request = RequestFactory().get("/healthz")
    with override_settings(CACHES=caches):
        view = health_view()
        ok = view(request)
        assert ok.status_code == 200 and json.loads(ok.content)["ok"] is True
        server.kill()
        down = view(request)
        assert down.status_code == 503 and json.loads(down.content)["ok"] is False
        with pytest.raises(ConfigurationError, match="plain"):
            health_view("plain")(request)
        close_shared_caches()
    mine = health_view(Cache(prefix=_prefix()))(request)
    assert mine.status_code == 200


@pytest.mark.parametrize("topology", ["redis_cluster", "redis_sentinel"])
def test_cluster_and_sentinel_caches_report_health_and_metrics(
    topology: str, request: pytest.FixtureRequest
) -> None:
    pytest.importorskip("prometheus_client")
    from prometheus_client import CollectorRegistry

    from cachekit.metrics.prometheus import PrometheusExporter

    servers = request.getfixturevalue(topology)
    exporter = PrometheusExporter(CollectorRegistry())
    prefix = _prefix()
    cache = Cache(servers.url, prefix=prefix, metrics=exporter)
    cache.set("k", 1)
    assert cache.get("k") == 1
    report = cache.health()
    assert report["ok"] is True, report
    assert report["latency_ms"] is not None
    labels = {"cache": prefix, "layer": "redis", "result": "hit"}
    assert exporter.registry.get_sample_value("cachekit_requests_total", labels) == 1
    cache.clear()
    cache.close()
