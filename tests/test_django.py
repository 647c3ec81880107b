"""The Django adapter: CachekitCache as a CACHES backend, through Django's own machinery.

Django's own cache suite (BaseCacheTests) runs against it from
``tests/django_suite/run_django_cache_suite.py``; these are cachekit's tests: Django
semantics on memory and Redis, the key layout, shared pools, signed pickles, native async,
``cache_page`` / per-site middleware / cache sessions through Django's test client, a Redis
outage during a request, and the stampede-safe ``cache_page``.
"""

from __future__ import annotations

import asyncio
import pickle
import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("django")

from django_settings import configure

configure(__name__)

import cachekit.integrations.django as dj  # noqa: E402
import redis  # noqa: E402
from cachekit.integrations.django import (  # noqa: E402
    CachekitCache,
    NotAnIntegerError,
    cache_page,
    close_shared_caches,
)
from django.core.cache import caches  # noqa: E402
from django.core.exceptions import ImproperlyConfigured  # noqa: E402
from django.core.signals import request_finished  # noqa: E402
from django.http import HttpRequest, HttpResponse  # noqa: E402
from django.test import Client, RequestFactory, override_settings  # noqa: E402
from django.urls import path  # noqa: E402
from django.views.decorators.cache import cache_page as django_cache_page  # noqa: E402

from cachekit.testing_servers import RedisServer  # noqa: E402

BACKEND = "cachekit.integrations.django.CachekitCache"

# -- views ----------------------------------------------------------------------------------
calls: Counter[str] = Counter()


def _count(name: str) -> HttpResponse:
    calls[name] += 1
    return HttpResponse(f"{name} run {calls[name]}")


def plain_view(request: HttpRequest) -> HttpResponse:
    return _count("plain")


@django_cache_page(60)
def django_page(request: HttpRequest) -> HttpResponse:
    return _count("django_page")


@cache_page(60)
def cachekit_page(request: HttpRequest) -> HttpResponse:
    return _count("cachekit_page")


def session_view(request: HttpRequest) -> HttpResponse:
    request.session["n"] = request.session.get("n", 0) + 1
    return HttpResponse(str(request.session["n"]))


urlpatterns = [
    path("plain/", plain_view),
    path("django-page/", django_page),
    path("cachekit-page/", cachekit_page),
    path("session/", session_view),
]


# -- fixtures -------------------------------------------------------------------------------
def _caches_setting(location: str, **extra: Any) -> dict[str, Any]:
    return {"default": {"BACKEND": BACKEND, "LOCATION": location, **extra}}


@pytest.fixture(autouse=True)
def _fresh() -> Iterator[None]:
    calls.clear()
    yield
    close_shared_caches()


@pytest.fixture
def prefix() -> str:
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture
def raw_redis(redis_server: RedisServer) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_server.url)
    yield client
    client.close()


@pytest.fixture
def redis_cache(redis_server: RedisServer, prefix: str) -> Iterator[Any]:
    with override_settings(CACHES=_caches_setting(redis_server.url, KEY_PREFIX=prefix)):
        cache = caches["default"]
        yield cache
        cache.clear()


@pytest.fixture(params=["memory", "redis"])
def dj_cache(request: pytest.FixtureRequest, prefix: str) -> Iterator[Any]:
    """The default cache on memory:// and on redis://, each test in its own KEY_PREFIX."""
    location = "memory://"
    if request.param == "redis":
        location = request.getfixturevalue("redis_server").url
    with override_settings(CACHES=_caches_setting(location, KEY_PREFIX=prefix)):
        cache = caches["default"]
        yield cache
        cache.clear()


# -- configuration and layout ---------------------------------------------------------------
def test_keys_are_djangos_own_layout_under_key_prefix(redis_cache: Any, raw_redis: Any) -> None:
    redis_cache.set("answer", 42)
    redis_cache.set("answer", 43, version=2)
    prefix = redis_cache.key_prefix
    assert sorted(raw_redis.keys(f"{prefix}:*")) == [
        f"{prefix}:1:answer".encode(),
        f"{prefix}:2:answer".encode(),
    ]


def test_empty_key_prefix_is_namespaced_as_django(
    redis_server: RedisServer, raw_redis: Any
) -> None:
    with override_settings(CACHES=_caches_setting(redis_server.url)):
        cache = caches["default"]
        cache.set(f"k-{uuid.uuid4().hex}", 1)
        assert raw_redis.keys("django:1:k-*")
        cache.clear()


def test_clear_removes_every_version_and_only_this_namespace(
    redis_cache: Any, raw_redis: Any
) -> None:
    redis_cache.set("a", 1)
    redis_cache.set("a", 2, version=7)
    raw_redis.set(b"someone-else:1:a", b"kept")
    try:
        redis_cache.clear()
        assert raw_redis.keys(f"{redis_cache.key_prefix}:*") == []
        assert raw_redis.get(b"someone-else:1:a") == b"kept"
    finally:
        raw_redis.delete(b"someone-else:1:a")


def test_custom_key_function_output_is_stored_under_the_namespace(
    redis_server: RedisServer, raw_redis: Any, prefix: str
) -> None:
    def key_func(key: str, key_prefix: str, version: int) -> str:
        return f"custom/{version}/{key}"

    setting = _caches_setting(redis_server.url, KEY_PREFIX=prefix, KEY_FUNCTION=key_func)
    with override_settings(CACHES=setting):
        cache = caches["default"]
        cache.set("x", 1)
        assert raw_redis.keys(f"{prefix}:*") == [f"{prefix}:custom/1/x".encode()]
        cache.clear()
        assert raw_redis.keys(f"{prefix}:*") == []


def test_unknown_option_is_a_configuration_error() -> None:
    with pytest.raises(ImproperlyConfigured, match="bogus"):
        CachekitCache("memory://", {"OPTIONS": {"bogus": 1}})


def test_max_entries_bounds_a_memory_cache(prefix: str) -> None:
    setting = _caches_setting("memory://", KEY_PREFIX=prefix, OPTIONS={"MAX_ENTRIES": 3})
    with override_settings(CACHES=setting):
        cache = caches["default"]
        for i in range(5):
            cache.set(f"k{i}", i)
        assert cache.get_many([f"k{i}" for i in range(5)]) == {"k2": 2, "k3": 3, "k4": 4}


def test_threads_share_one_cachekit_cache_and_pool(redis_cache: Any) -> None:
    seen: list[Any] = []
    thread = threading.Thread(target=lambda: seen.append(caches["default"]))
    thread.start()
    thread.join()
    assert seen[0] is not redis_cache  # Django's per-thread backend instances...
    assert seen[0].cachekit is redis_cache.cachekit  # ...over one cachekit cache


def test_close_after_each_request_keeps_the_shared_pool(redis_cache: Any) -> None:
    redis_cache.set("k", "v")
    request_finished.send(sender=None)  # Django closes caches at the end of each request
    redis_cache.close()
    assert redis_cache.get("k") == "v"
    assert redis_cache.cachekit.stats()["circuit"] == "closed"


# -- values: signed pickle by default -------------------------------------------------------
pwned: list[int] = []


def _pwn() -> None:
    pwned.append(1)


class _Evil:
    def __reduce__(self) -> Any:
        return (_pwn, ())


class _Point:
    def __init__(self, x: int) -> None:
        self.x = x

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Point) and other.x == self.x

    __hash__ = None  # type: ignore[assignment]


def test_arbitrary_objects_round_trip(dj_cache: Any) -> None:
    value = {"point": _Point(3), "tuple": (1, 2), "set": {1, 2}, "bytes": b"\x00\xff"}
    dj_cache.set("obj", value)
    assert dj_cache.get("obj") == value


def test_a_forged_pickle_is_refused_unread(redis_cache: Any, raw_redis: Any) -> None:
    forged = b"\x01" + b"\x00" * 32 + pickle.dumps(_Evil())
    raw_redis.set(f"{redis_cache.key_prefix}:1:victim", forged)
    assert redis_cache.get("victim", "default") == "default"
    assert pwned == []


def test_default_entries_are_pickles_signed_with_hmac_sha256_of_secret_key(
    redis_cache: Any, raw_redis: Any
) -> None:
    import hashlib
    import hmac

    from django.conf import settings

    redis_cache.set("signed", {"a": 1})
    stored = raw_redis.get(f"{redis_cache.key_prefix}:1:signed")
    flag, mac, payload = stored[:1], stored[1:33], stored[33:]
    key = hashlib.sha256(dj._SECRET_SALT + b":" + settings.SECRET_KEY.encode()).digest()
    assert flag == b"\x01"
    assert mac == hmac.new(key, payload, hashlib.sha256).digest()
    assert pickle.loads(payload) == {"a": 1}


def test_unpicklable_value_raises_a_pickling_error(dj_cache: Any) -> None:
    with pytest.raises(pickle.PicklingError):
        dj_cache.set("lock", threading.Lock())
    with pytest.raises(pickle.PicklingError):
        dj_cache.add("lock", threading.Lock())
    with pytest.raises(pickle.PicklingError):
        dj_cache.set_many({"lock": threading.Lock()})
    assert dj_cache.has_key("lock") is False


def test_serializer_option_overrides_pickle(
    redis_server: RedisServer, raw_redis: Any, prefix: str
) -> None:
    setting = _caches_setting(redis_server.url, KEY_PREFIX=prefix, OPTIONS={"serializer": "orjson"})
    with override_settings(CACHES=setting):
        cache = caches["default"]
        cache.set("doc", {"a": [1, 2]})
        assert raw_redis.get(f"{prefix}:1:doc") == b'\x01{"a":[1,2]}'
        assert cache.get("doc") == {"a": [1, 2]}
        cache.clear()


# -- Django semantics -----------------------------------------------------------------------
def test_timeouts(dj_cache: Any) -> None:
    dj_cache.set("default", 1)
    assert 290 < dj_cache.cachekit.ttl(dj_cache.make_key("default")) <= 300
    dj_cache.set("forever", 1, timeout=None)
    assert dj_cache.cachekit.ttl(dj_cache.make_key("forever")) is None
    assert dj_cache.has_key("forever")
    dj_cache.set("zero", 1, timeout=0)
    assert dj_cache.has_key("zero") is False
    dj_cache.set("gone", 1)
    dj_cache.set("gone", 2, timeout=-5)  # negative: delete, as Django's backends do
    assert dj_cache.get("gone") is None
    dj_cache.set_many({"m1": 1, "m2": 2}, timeout=0)
    assert dj_cache.get_many(["m1", "m2"]) == {}


def test_add_with_zero_timeout_reports_but_stores_nothing(dj_cache: Any) -> None:
    assert dj_cache.add("fresh", 1, timeout=0) is True
    assert dj_cache.has_key("fresh") is False
    dj_cache.set("taken", 1)
    assert dj_cache.add("taken", 2, timeout=0) is False
    assert dj_cache.get("taken") == 1


def test_settings_timeout_is_the_default(prefix: str) -> None:
    with override_settings(CACHES=_caches_setting("memory://", KEY_PREFIX=prefix, TIMEOUT=None)):
        cache = caches["default"]
        cache.set("k", 1)
        assert cache.cachekit.ttl(cache.make_key("k")) is None
    with override_settings(CACHES=_caches_setting("memory://", KEY_PREFIX=prefix, TIMEOUT=7)):
        cache = caches["default"]
        cache.set("k", 1)
        assert 6 < cache.cachekit.ttl(cache.make_key("k")) <= 7


def test_touch(dj_cache: Any) -> None:
    dj_cache.set("k", 1, timeout=100)
    assert dj_cache.touch("k", 10) is True
    assert 9 < dj_cache.cachekit.ttl(dj_cache.make_key("k")) <= 10
    assert dj_cache.touch("k", None) is True
    assert dj_cache.cachekit.ttl(dj_cache.make_key("k")) is None
    assert dj_cache.touch("missing") is False
    assert dj_cache.touch("k", 0) is True
    assert dj_cache.has_key("k") is False


def test_incr_decr(dj_cache: Any) -> None:
    with pytest.raises(ValueError, match="not found"):
        dj_cache.incr("missing")
    with pytest.raises(ValueError, match="not found"):
        dj_cache.decr("missing")
    assert dj_cache.has_key("missing") is False  # Redis INCR did not create it
    dj_cache.set("n", 41, timeout=100)
    assert dj_cache.incr("n") == 42
    assert dj_cache.decr("n", 10) == 32
    assert dj_cache.get("n") == 32
    assert 90 < dj_cache.cachekit.ttl(dj_cache.make_key("n")) <= 100  # expiry kept
    dj_cache.set("text", "abc")
    with pytest.raises(TypeError):
        dj_cache.incr("text")
    dj_cache.set("none", None)
    with pytest.raises(NotAnIntegerError):
        dj_cache.decr("none")


def test_versions(dj_cache: Any) -> None:
    dj_cache.set("k", "v1")
    dj_cache.set("k", "v2", version=2)
    assert dj_cache.get("k") == "v1"
    assert dj_cache.get("k", version=2) == "v2"
    assert dj_cache.incr_version("k") == 2
    assert dj_cache.get("k") is None
    assert dj_cache.get("k", version=2) == "v1"


def test_none_is_a_value_and_has_key(dj_cache: Any) -> None:
    dj_cache.set("null", None)
    assert dj_cache.get("null", "default") is None
    assert dj_cache.has_key("null")
    assert "null" in dj_cache
    assert dj_cache.get_or_set("null", "other") is None
    assert dj_cache.get_or_set("loaded", lambda: "computed") == "computed"
    assert dj_cache.get("loaded") == "computed"


def test_many(dj_cache: Any) -> None:
    assert dj_cache.set_many({"a": 1, "b": None, "c": "x"}) == []
    assert dj_cache.set_many({}) == []
    assert dj_cache.get_many(iter(["a", "b", "c", "d"])) == {"a": 1, "b": None, "c": "x"}
    assert dj_cache.get_many([]) == {}
    assert dj_cache.delete_many(["a", "b"]) is None
    assert dj_cache.delete_many([]) is None
    assert dj_cache.get_many(["a", "b", "c"]) == {"c": "x"}
    assert dj_cache.delete("c") is True
    assert dj_cache.delete("c") is False


# -- async: native, over redis.asyncio ------------------------------------------------------
async def test_async_api_is_native(redis_cache: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    import django.core.cache.backends.base as base

    def no_thread_hop(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("an async method went through sync_to_async")

    monkeypatch.setattr(base, "sync_to_async", no_thread_hop)
    cache = redis_cache
    try:
        await cache.aset("a", 1)
        assert await cache.aget("a") == 1
        assert await cache.aget("missing", "d") == "d"
        assert await cache.aadd("a", 2) is False
        assert await cache.aadd("b", 2) is True
        assert await cache.aadd("zero", 2, timeout=0) is True
        assert await cache.ahas_key("zero") is False
        assert await cache.aincr("a", 5) == 6
        assert await cache.adecr("a") == 5
        with pytest.raises(ValueError):
            await cache.aincr("missing")
        assert await cache.ahas_key("a") is True
        assert await cache.atouch("a", None) is True
        assert await cache.aset_many({"c": 3, "d": 4}) == []
        assert await cache.aget_many(["a", "b", "c", "x"]) == {"a": 5, "b": 2, "c": 3}
        await cache.adelete_many(["c", "d"])
        assert await cache.aget_or_set("e", lambda: "E") == "E"
        assert await cache.aincr_version("e") == 2
        assert await cache.aget("e", version=2) == "E"
        assert await cache.adelete("b") is True
        with pytest.raises(pickle.PicklingError):
            await cache.aset("lock", threading.Lock())
        await cache.aclear()
        assert await cache.aget_many(["a", "e"]) == {}
        await cache.aclose()
        assert await cache.aget("a", "still works") == "still works"
    finally:
        await cache.cachekit.aclose()


# -- Django's machinery on CachekitCache, through the test client ---------------------------
def test_djangos_cache_page(redis_cache: Any) -> None:
    client = Client()
    first = client.get("/django-page/")
    second = client.get("/django-page/")
    assert first.content == second.content == b"django_page run 1"
    assert calls["django_page"] == 1
    assert "max-age=60" in second["Cache-Control"]


UPDATE = "django.middleware.cache.UpdateCacheMiddleware"
FETCH = "django.middleware.cache.FetchFromCacheMiddleware"


def test_per_site_cache_middleware(redis_cache: Any) -> None:
    with override_settings(MIDDLEWARE=[UPDATE, FETCH], CACHE_MIDDLEWARE_SECONDS=30):
        client = Client()
        assert client.get("/plain/?q=1").content == b"plain run 1"
        assert client.get("/plain/?q=1").content == b"plain run 1"
        assert client.get("/plain/?q=2").content == b"plain run 2"
        assert client.post("/plain/?q=1").content == b"plain run 3"  # POST is not cached
    assert calls["plain"] == 3


def test_cache_sessions(redis_cache: Any, raw_redis: Any) -> None:
    middleware = ["django.contrib.sessions.middleware.SessionMiddleware"]
    with override_settings(MIDDLEWARE=middleware):
        client = Client()
        assert [client.get("/session/").content for _ in range(3)] == [b"1", b"2", b"3"]
        session_key = client.cookies["sessionid"].value
    stored = raw_redis.keys(f"{redis_cache.key_prefix}:1:django.contrib.sessions.cache*")
    assert stored and session_key in stored[0].decode()


def test_backend_outage_during_a_request_serves_the_real_response(
    private_redis: RedisServer, prefix: str
) -> None:
    setting = _caches_setting(private_redis.url, KEY_PREFIX=prefix, OPTIONS={"timeout": 0.5})
    with override_settings(CACHES=setting, MIDDLEWARE=[UPDATE, FETCH]):
        client = Client()
        assert client.get("/cachekit-page/").content == b"cachekit_page run 1"
        assert client.get("/cachekit-page/").content == b"cachekit_page run 1"  # cached
        private_redis.kill()
        for path_ in ("/cachekit-page/", "/django-page/", "/plain/"):
            response = client.get(path_)
            assert response.status_code == 200
        assert calls == {"cachekit_page": 2, "django_page": 1, "plain": 1}
        assert caches["default"].set_many({"a": 1, "b": 2}) == ["a", "b"]


# -- cache_page with stampede protection ----------------------------------------------------
def _count_joins(monkeypatch: pytest.MonkeyPatch, wanted: int) -> threading.Event:
    """An event set once ``wanted`` requests have reached the single-flight."""
    all_joined = threading.Event()
    joined = Counter[str]()
    original = dj._SingleFlight.join

    def join(self: Any, key: str) -> Any:
        result = original(self, key)
        joined["n"] += 1
        if joined["n"] >= wanted:
            all_joined.set()
        return result

    monkeypatch.setattr(dj._SingleFlight, "join", join)
    return all_joined


def test_cache_page_runs_the_view_once_for_16_cold_requests(
    redis_cache: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    all_joined = _count_joins(monkeypatch, 16)

    @cache_page(60)
    def slow(request: HttpRequest) -> HttpResponse:
        assert all_joined.wait(5), "the other requests never arrived"
        return _count("slow")

    factory = RequestFactory()
    responses: list[HttpResponse] = []
    threads = [
        threading.Thread(target=lambda: responses.append(slow(factory.get("/slow/"))))
        for _ in range(16)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert calls["slow"] == 1
    assert [r.content for r in responses] == [b"slow run 1"] * 16


def test_without_the_lock_16_cold_requests_run_the_view_16_times(redis_cache: Any) -> None:
    inside = threading.Barrier(16, timeout=5)

    @cache_page(60, lock=False)
    def slow(request: HttpRequest) -> HttpResponse:
        inside.wait()  # all 16 are in the view at once
        return _count("slow")

    factory = RequestFactory()
    threads = [threading.Thread(target=lambda: slow(factory.get("/slow/"))) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert calls["slow"] == 16


def test_cache_page_lock_waiters_recompute_when_the_page_is_not_cacheable(
    redis_cache: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    all_joined = _count_joins(monkeypatch, 4)

    @cache_page(60)
    def private(request: HttpRequest) -> HttpResponse:
        all_joined.wait(5)
        response = _count("private")
        response["Cache-Control"] = "private"
        return response

    factory = RequestFactory()
    threads = [threading.Thread(target=lambda: private(factory.get("/p/"))) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert calls["private"] == 4  # nothing was stored: everyone got their own response


async def test_cache_page_on_an_async_view_runs_it_once(
    redis_cache: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    all_joined = asyncio.Event()
    joined: list[str] = []
    original = dj._AsyncSingleFlight.join

    def join(self: Any, key: str) -> Any:
        joined.append(key)
        if len(joined) == 16:
            all_joined.set()
        return original(self, key)

    monkeypatch.setattr(dj._AsyncSingleFlight, "join", join)

    @cache_page(60)
    async def slow(request: HttpRequest) -> HttpResponse:
        await asyncio.wait_for(all_joined.wait(), 5)
        return _count("aslow")

    factory = RequestFactory()
    responses = await asyncio.gather(*(slow(factory.get("/aslow/")) for _ in range(16)))
    assert calls["aslow"] == 1
    assert [r.content for r in responses] == [b"aslow run 1"] * 16
    await redis_cache.cachekit.aclose()


def test_cache_page_serves_hits_and_keeps_djangos_headers(redis_cache: Any) -> None:
    client = Client()
    first = client.get("/cachekit-page/")
    second = client.get("/cachekit-page/")
    assert first.content == second.content == b"cachekit_page run 1"
    assert "max-age=60" in second["Cache-Control"]
    assert calls["cachekit_page"] == 1


def test_cache_page_lock_spans_processes(redis_cache: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two decorations of one page stand in for two processes: each has its own in-process
    single-flight, so only cachekit's Redis lock can keep the second from running the view."""
    from cachekit._lock import CacheLock

    a_started, b_waiting = threading.Event(), threading.Event()
    original_acquire = CacheLock.acquire

    def acquire(self: Any, blocking: bool | None = None, timeout: Any = None) -> bool:
        if blocking is None:  # the waiting acquire, after the lock was found taken
            b_waiting.set()
            return original_acquire(self)
        return original_acquire(self, blocking=blocking)

    monkeypatch.setattr(CacheLock, "acquire", acquire)

    def view_a(request: HttpRequest) -> HttpResponse:
        a_started.set()
        assert b_waiting.wait(5), "process B never waited on the lock"
        return _count("a")

    def view_b(request: HttpRequest) -> HttpResponse:
        return _count("b")

    page_a, page_b = cache_page(60)(view_a), cache_page(60)(view_b)
    factory = RequestFactory()
    results: dict[str, HttpResponse] = {}
    thread_a = threading.Thread(target=lambda: results.update(a=page_a(factory.get("/x/"))))
    thread_a.start()
    assert a_started.wait(5)
    results["b"] = page_b(factory.get("/x/"))
    thread_a.join()
    assert calls == {"a": 1}
    assert results["a"].content == results["b"].content == b"a run 1"
