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
import time
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
from django.contrib import messages  # noqa: E402
from django.contrib.sessions.middleware import SessionMiddleware  # noqa: E402
from django.core.cache import caches  # noqa: E402
from django.core.exceptions import ImproperlyConfigured  # noqa: E402
from django.core.signals import request_finished  # noqa: E402
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse  # noqa: E402
from django.test import AsyncClient, Client, RequestFactory, override_settings  # noqa: E402
from django.urls import path  # noqa: E402
from django.utils import translation  # noqa: E402
from django.views.decorators.cache import cache_page as django_cache_page  # noqa: E402

from cachekit.http import CachedResponse, load  # noqa: E402
from cachekit.testing.servers import RedisServer  # noqa: E402

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


def flash(request: HttpRequest) -> HttpResponse:  # not cached: a message for its user
    messages.info(request, f"payment of {request.GET['who']} received")
    return HttpResponse("ok")


@cache_page(60)
def inbox(request: HttpRequest) -> HttpResponse:  # shows (and so consumes) the messages
    calls["inbox"] += 1
    shown = [str(message) for message in messages.get_messages(request)]
    return HttpResponse(f"inbox {calls['inbox']} {shown}")


@cache_page(60)
def dashboard(request: HttpRequest) -> HttpResponse:  # who is logged in: a cookie it reads
    calls["dashboard"] += 1
    return HttpResponse(f"dashboard of {request.COOKIES.get('auth', 'anonymous')}")


@cache_page(60)
async def async_inbox(request: HttpRequest) -> HttpResponse:
    calls["async_inbox"] += 1
    shown = [str(message) for message in messages.get_messages(request)]
    return HttpResponse(f"async inbox {calls['async_inbox']} {shown}")


@cache_page(60)
async def async_page(request: HttpRequest) -> HttpResponse:
    return _count("async_page")


class PersonalMiddleware:
    """A response phase that personalises: private for logged-in users, a cookie on
    /tracked/, Vary on /greeting/ (all after cache_page has returned)."""

    def __init__(self, get_response: Any) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response: HttpResponse = self.get_response(request)
        if request.COOKIES.get("auth"):
            response["Cache-Control"] = "private"
        if request.path == "/tracked/":
            response.set_cookie("visitor", "v1")
        return response


urlpatterns = [
    path("plain/", plain_view),
    path("django-page/", django_page),
    path("cachekit-page/", cachekit_page),
    path("session/", session_view),
    path("flash/", flash),
    path("inbox/", inbox),
    path("tracked/", cache_page(60)(plain_view)),
    path("dashboard/", dashboard),
    path("async-inbox/", async_inbox),
    path("async-page/", async_page),
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
    assert sorted(raw_redis.keys(f"!django:{prefix}:*")) == [
        f"!django:{prefix}:1:answer".encode(),
        f"!django:{prefix}:2:answer".encode(),
    ]


def test_empty_key_prefix_is_namespaced_as_django(
    redis_server: RedisServer, raw_redis: Any
) -> None:
    with override_settings(CACHES=_caches_setting(redis_server.url)):
        cache = caches["default"]
        cache.set(f"k-{uuid.uuid4().hex}", 1)
        assert raw_redis.keys("!django:django:1:k-*")
        cache.clear()


def test_clear_removes_every_version_and_only_this_namespace(
    redis_cache: Any, raw_redis: Any
) -> None:
    redis_cache.set("a", 1)
    redis_cache.set("a", 2, version=7)
    raw_redis.set(b"someone-else:1:a", b"kept")
    try:
        redis_cache.clear()
        assert raw_redis.keys(f"!django:{redis_cache.key_prefix}:*") == []
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
        assert raw_redis.keys(f"!django:{prefix}:*") == [f"!django:{prefix}:custom/1/x".encode()]
        cache.clear()
        assert raw_redis.keys(f"!django:{prefix}:*") == []


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
    raw_redis.set(f"!django:{redis_cache.key_prefix}:1:victim", forged)
    assert redis_cache.get("victim", "default") == "default"
    assert pwned == []


def test_default_entries_are_pickles_signed_with_hmac_sha256_of_secret_key(
    redis_cache: Any, raw_redis: Any
) -> None:
    import hashlib
    import hmac

    from django.conf import settings

    redis_cache.set("signed", {"a": 1})
    full = f"!django:{redis_cache.key_prefix}:1:signed".encode()
    stored = raw_redis.get(full)
    flag, mac, payload = stored[:1], stored[1:33], stored[33:]
    secret = hashlib.sha256(dj._SECRET_SALT + b":" + settings.SECRET_KEY.encode()).digest()
    # the entry is signed bound to its key (cachekit.core.codec): moved elsewhere, it is refused
    key = hmac.new(secret, b"cachekit/entry", hashlib.sha256).digest()
    framed = len(full).to_bytes(4, "big") + full + flag + payload
    assert flag == b"\x41"
    assert mac == hmac.new(key, framed, hashlib.sha256).digest()
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
        assert raw_redis.get(f"!django:{prefix}:1:doc") == b'\x01{"a":[1,2]}'
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
    stored = raw_redis.keys(f"!django:{redis_cache.key_prefix}:1:django.contrib.sessions.cache*")
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


# -- cachekit's cache_page: cachekit's HTTP cache, one read per hit -------------------------
factory = RequestFactory()


def _engine(view: Any) -> Any:
    """The HTTP cache driver a decorated view uses on the current default cache."""
    return view.page_cache.engine().http


def _wait_for_followers(view: Any, wanted: int) -> bool:
    """Hold a leader until ``wanted`` other requests are parked on its flight (the driver's
    counter is the only signal there is; 5 s at most)."""
    deadline = time.monotonic() + 5
    while _engine(view).followers() < wanted:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.001)
    return True


def _commands(server: RedisServer) -> Counter[str]:
    client = redis.Redis.from_url(server.url)
    try:
        stats = client.info("commandstats")
    finally:
        client.close()
    return Counter({k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in stats.items()})


def _since(server: RedisServer, before: Counter[str]) -> Counter[str]:
    after = _commands(server)
    after.subtract(before)
    # this helper's own connections: INFO, HELLO and CLIENT (Redis >= 7.2 counts redis-py's
    # CLIENT SETINFO on connect as "client|setinfo"; 7.0 refuses it, uncounted)
    own = ("info", "hello", "client")
    return Counter({k: v for k, v in after.items() if v and k.split("|")[0] not in own})


def test_cache_page_serves_hits_with_djangos_headers_plus_age_and_cache_status(
    redis_cache: Any,
) -> None:
    client = Client()
    first = client.get("/cachekit-page/")
    second = client.get("/cachekit-page/")
    assert first.content == second.content == b"cachekit_page run 1"
    assert calls["cachekit_page"] == 1
    assert first["Cache-Status"] == "cachekit; fwd=uri-miss; stored"
    assert second["Cache-Status"].startswith("cachekit; hit; ttl=")
    assert second["Age"] == "0"
    for response in (first, second):  # Django's cache_page headers
        assert response["Cache-Control"] == "max-age=60"
        assert response["Expires"] == first["Expires"]
        assert response["Content-Type"] == "text/html; charset=utf-8"
    assert second["Content-Length"] == str(len(b"cachekit_page run 1"))


def test_a_hit_is_one_redis_get_and_the_entry_is_no_pickle(
    private_redis: RedisServer, prefix: str
) -> None:
    with override_settings(CACHES=_caches_setting(private_redis.url, KEY_PREFIX=prefix)):
        client = Client()
        assert client.get("/cachekit-page/?a=1").status_code == 200
        before = _commands(private_redis)
        for _ in range(50):
            assert client.get("/cachekit-page/?a=1").content == b"cachekit_page run 1"
        assert _since(private_redis, before) == Counter({"get": 50})
        (key,) = redis.Redis.from_url(private_redis.url).keys(f"!django:{prefix}:1:cache_page.*")
        stored = redis.Redis.from_url(private_redis.url).get(key)
    assert key.decode().endswith(":http:GET:http://testserver/cachekit-page/?a=1")
    assert b"pickle" not in stored and stored[:1] != pickle.PROTO  # cachekit's 1-byte envelope
    assert stored[:1] == b"\x41"  # signed (the SECRET_KEY-derived secret), bound to the key
    entry = load(stored[33:])  # after the MAC, CachedResponse.to_bytes() as it is
    assert isinstance(entry, CachedResponse) and entry.body == b"cachekit_page run 1"
    assert stored[33:] == entry.to_bytes()


def test_a_page_with_vary_is_two_gets_and_one_entry_per_variant(
    private_redis: RedisServer, prefix: str
) -> None:
    @cache_page(60)
    def varying(request: HttpRequest) -> HttpResponse:
        response = _count("varying")
        response["Vary"] = "Accept-Language"
        return response

    with override_settings(CACHES=_caches_setting(private_redis.url, KEY_PREFIX=prefix)):
        fr, de = {"HTTP_ACCEPT_LANGUAGE": "fr"}, {"HTTP_ACCEPT_LANGUAGE": "de"}
        assert varying(factory.get("/v/", **fr)).content == b"varying run 1"
        assert varying(factory.get("/v/", **de)).content == b"varying run 2"
        no_header = varying(factory.get("/v/"))
        assert no_header.content == b"varying run 3"  # lacking the header is a variant too
        before = _commands(private_redis)
        hit = varying(factory.get("/v/", **fr))
        assert _since(private_redis, before) == Counter({"get": 2})
        assert hit.content == b"varying run 1" and "hit" in hit["Cache-Status"]
        assert varying(factory.get("/v/", **de)).content == b"varying run 2"
    assert calls["varying"] == 3


def test_conditional_requests_get_304_from_the_cache(redis_cache: Any) -> None:
    @cache_page(60, etag_from_body=True)
    def tagged(request: HttpRequest) -> HttpResponse:
        response = _count("tagged")
        response["Last-Modified"] = "Mon, 01 Jan 2024 00:00:00 GMT"
        return response

    first = tagged(factory.get("/t/"))
    etag = first["ETag"]
    assert etag.startswith('"')
    not_modified = tagged(factory.get("/t/", HTTP_IF_NONE_MATCH=etag))
    assert not_modified.status_code == 304 and not_modified.content == b""
    assert not_modified["ETag"] == etag and "Content-Type" not in not_modified
    assert "hit" in not_modified["Cache-Status"]
    other = tagged(factory.get("/t/", HTTP_IF_NONE_MATCH='"other"'))
    assert other.status_code == 200 and other.content == b"tagged run 1"
    since = tagged(factory.get("/t/", HTTP_IF_MODIFIED_SINCE="Tue, 02 Jan 2024 00:00:00 GMT"))
    assert since.status_code == 304
    older = tagged(factory.get("/t/", HTTP_IF_MODIFIED_SINCE="Sun, 31 Dec 2023 00:00:00 GMT"))
    assert older.status_code == 200
    assert calls["tagged"] == 1


def test_head_is_answered_from_the_get_entry(redis_cache: Any) -> None:
    client = Client()
    assert client.get("/cachekit-page/").status_code == 200
    head = client.head("/cachekit-page/")
    assert head.status_code == 200 and head.content == b""
    assert head["Content-Length"] == str(len(b"cachekit_page run 1"))
    assert "hit" in head["Cache-Status"]
    assert calls["cachekit_page"] == 1


def test_a_cold_head_runs_the_view_and_stores_nothing(redis_cache: Any) -> None:
    client = Client()
    assert client.head("/cachekit-page/").status_code == 200
    assert client.get("/cachekit-page/").content == b"cachekit_page run 2"
    assert calls["cachekit_page"] == 2


@pytest.mark.parametrize(
    "change",
    [
        "cookie",
        "private",
        "no-store",
        "vary-star",
        "not-200",
    ],
)
def test_responses_rfc_9111_forbids_sharing_are_not_stored(redis_cache: Any, change: str) -> None:
    @cache_page(60)
    def view(request: HttpRequest) -> HttpResponse:
        response = _count("view")
        if change == "cookie":
            response.set_cookie("user", "alice")
        elif change == "private":
            response["Cache-Control"] = "private"
        elif change == "no-store":
            response["Cache-Control"] = "no-store"
        elif change == "vary-star":
            response["Vary"] = "*"
        else:
            response.status_code = 404
        return response

    first, second = view(factory.get("/r/")), view(factory.get("/r/"))
    assert calls["view"] == 2
    assert second["Cache-Status"] == "cachekit; fwd=uri-miss"  # forwarded, not stored
    if change == "cookie":
        assert first.cookies["user"].value == second.cookies["user"].value == "alice"


def test_a_request_with_authorization_is_not_served_a_shared_page(redis_cache: Any) -> None:
    client = Client()
    assert client.get("/cachekit-page/").content == b"cachekit_page run 1"
    private = client.get("/cachekit-page/", HTTP_AUTHORIZATION="Bearer x")
    assert private.content == b"cachekit_page run 2"
    assert "Authorization" in private["Vary"]  # Django's rule: its response varies on it
    assert client.get("/cachekit-page/").content == b"cachekit_page run 1"


def test_request_no_cache_goes_to_the_view(redis_cache: Any) -> None:
    client = Client()
    client.get("/cachekit-page/")
    fresh = client.get("/cachekit-page/", HTTP_CACHE_CONTROL="no-cache")
    assert fresh.content == b"cachekit_page run 2"


def test_a_view_max_age_below_the_page_timeout_is_the_lifetime(redis_cache: Any) -> None:
    @cache_page(60)
    def short(request: HttpRequest) -> HttpResponse:
        response = _count("short")
        response["Cache-Control"] = "max-age=5"
        return response

    short(factory.get("/s/"))
    hit = short(factory.get("/s/"))
    assert hit["Cache-Control"] == "max-age=5"  # Django keeps the smaller max-age
    assert hit["Cache-Status"] in ("cachekit; hit; ttl=5", "cachekit; hit; ttl=4")
    key = f"!django:{redis_cache.key_prefix}:1:cache_page.*:http:GET:http://testserver/s/"
    client = redis.Redis.from_url(redis_cache.cachekit.url)
    (found,) = client.keys(key)
    assert 0 < client.ttl(found) <= 5
    client.close()


def test_timeout_zero_stores_nothing(redis_cache: Any) -> None:
    @cache_page(0)
    def never(request: HttpRequest) -> HttpResponse:
        return _count("never")

    never(factory.get("/n/"))
    never(factory.get("/n/"))
    assert calls["never"] == 2


def test_cache_tag_header_becomes_tags_and_is_stripped(redis_cache: Any) -> None:
    @cache_page(60)
    def product(request: HttpRequest, pid: int) -> HttpResponse:
        response = _count(f"product{pid}")
        response["Cache-Tag"] = f"products, product-{pid}"
        return response

    first = product(factory.get("/p/1/"), 1)
    assert "Cache-Tag" not in first
    product(factory.get("/p/2/"), 2)
    hit = product(factory.get("/p/1/"), 1)
    assert "Cache-Tag" not in hit and "hit" in hit["Cache-Status"]
    assert redis_cache.cachekit.invalidate_tags("product-1") >= 1
    assert product(factory.get("/p/1/"), 1).content == b"product1 run 2"
    assert product(factory.get("/p/2/"), 2).content == b"product2 run 1"
    redis_cache.cachekit.invalidate_tags("products")
    assert product(factory.get("/p/2/"), 2).content == b"product2 run 2"


def test_a_successful_post_drops_the_page(redis_cache: Any) -> None:
    client = Client()
    client.get("/cachekit-page/")
    assert client.post("/cachekit-page/").content == b"cachekit_page run 2"
    assert client.get("/cachekit-page/").content == b"cachekit_page run 3"


def test_key_prefix_language_and_query_normalisation(redis_cache: Any) -> None:
    @cache_page(60, key_prefix="shop")
    def shop(request: HttpRequest) -> HttpResponse:
        return _count("shop")

    @cache_page(60, key_prefix="blog")
    def blog(request: HttpRequest) -> HttpResponse:
        return _count("blog")

    assert shop(factory.get("/x/?b=2&a=1")).content == b"shop run 1"
    assert shop(factory.get("/x/?a=1&b=2")).content == b"shop run 1"  # same query, sorted
    assert blog(factory.get("/x/?a=1&b=2")).content == b"blog run 1"  # its own prefix
    with translation.override("fr"):
        assert shop(factory.get("/x/?a=1&b=2")).content == b"shop run 2"  # as Django: per language
    client = redis.Redis.from_url(redis_cache.cachekit.url)
    keys = sorted(k.decode() for k in client.keys(f"!django:{redis_cache.key_prefix}:1:cache_page.*"))
    client.close()
    assert [key.split(":http:")[0].split(".")[1:3] for key in keys] == [
        ["blog", "en-us"],
        ["shop", "en-us"],
        ["shop", "fr"],
    ]


def test_memory_location_works_too(prefix: str) -> None:
    with override_settings(CACHES=_caches_setting("memory://", KEY_PREFIX=prefix)):
        client = Client()
        assert client.get("/cachekit-page/").content == b"cachekit_page run 1"
        hit = client.get("/cachekit-page/")
        assert hit.content == b"cachekit_page run 1" and "hit" in hit["Cache-Status"]


def test_streaming_responses_pass_through_unstored(redis_cache: Any) -> None:
    produced: list[int] = []

    def chunks() -> Iterator[bytes]:
        for i in range(3):
            produced.append(i)
            yield b"c%d" % i

    @cache_page(60)
    def stream(request: HttpRequest) -> StreamingHttpResponse:
        calls["stream"] += 1
        return StreamingHttpResponse(chunks())

    response = stream(factory.get("/st/"))
    assert produced == []  # not buffered
    assert b"".join(response.streaming_content) == b"c0c1c2"
    assert response["Cache-Status"] == "cachekit; fwd=uri-miss"
    stream(factory.get("/st/"))
    assert calls["stream"] == 2


def test_a_session_page_varies_on_cookie_and_a_new_session_is_not_stored(
    redis_cache: Any,
) -> None:
    @cache_page(60)
    def reads(request: HttpRequest) -> HttpResponse:
        calls["reads"] += 1
        return HttpResponse(f"hello {request.session.get('name', 'anon')}")

    @cache_page(60)
    def writes(request: HttpRequest) -> HttpResponse:
        request.session["name"] = "bob"
        return _count("writes")

    with override_settings(MIDDLEWARE=["django.contrib.sessions.middleware.SessionMiddleware"]):
        anon = factory.get("/s/")
        SessionMiddleware(lambda r: HttpResponse()).process_request(anon)
        first = reads(anon)
        assert "Cookie" in first["Vary"]
        other = factory.get("/s/", HTTP_COOKIE="sessionid=someone-elses")
        SessionMiddleware(lambda r: HttpResponse()).process_request(other)
        reads(other)
        assert calls["reads"] == 2  # another Cookie header: another variant
        for _ in range(2):
            request = factory.get("/w/")
            SessionMiddleware(lambda r: HttpResponse()).process_request(request)
            assert writes(request)["Cache-Status"] == "cachekit; fwd=uri-miss"
        assert calls["writes"] == 2


def test_outage_serves_the_views_response(private_redis: RedisServer, prefix: str) -> None:
    setting = _caches_setting(private_redis.url, KEY_PREFIX=prefix, OPTIONS={"timeout": 0.5})
    with override_settings(CACHES=setting):
        client = Client()
        assert client.get("/cachekit-page/").content == b"cachekit_page run 1"
        private_redis.kill()
        for run in (2, 3):
            response = client.get("/cachekit-page/")
            assert response.status_code == 200
            assert response.content == f"cachekit_page run {run}".encode()


def test_on_error_raise_still_serves_the_view(private_redis: RedisServer, prefix: str) -> None:
    options = {"timeout": 0.5, "on_error": "raise"}
    setting = _caches_setting(private_redis.url, KEY_PREFIX=prefix, OPTIONS=options)
    with override_settings(CACHES=setting):
        private_redis.kill()
        response = Client().get("/cachekit-page/")
    assert response.status_code == 200 and response.content == b"cachekit_page run 1"


def test_another_backend_alias_falls_back_to_djangos_cache_page(redis_cache: Any) -> None:
    locmem = {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "lm"}
    with override_settings(CACHES={"default": {"BACKEND": BACKEND}, "lm": locmem}):

        @cache_page(60, cache="lm")
        def page(request: HttpRequest) -> HttpResponse:
            return _count("lm")

        first, second = page(factory.get("/lm/")), page(factory.get("/lm/"))
        assert first.content == second.content == b"lm run 1"
        assert "Cache-Status" not in second  # Django's own machinery
        assert page.page_cache.engine() is None
        caches["lm"].clear()


def test_the_cache_argument_names_a_cachekit_alias(redis_cache: Any, prefix: str) -> None:
    setting = {
        "default": {"BACKEND": BACKEND, "LOCATION": "memory://", "KEY_PREFIX": prefix},
        "pages": {"BACKEND": BACKEND, "LOCATION": redis_cache.cachekit.url, "KEY_PREFIX": prefix},
    }
    with override_settings(CACHES=setting):

        @cache_page(60, cache="pages")
        def page(request: HttpRequest) -> HttpResponse:
            return _count("pages")

        page(factory.get("/pg/"))
        assert "hit" in page(factory.get("/pg/"))["Cache-Status"]
        assert caches["pages"].cachekit.url == redis_cache.cachekit.url
        client = redis.Redis.from_url(redis_cache.cachekit.url)
        assert client.keys(f"!django:{prefix}:1:cache_page.*/pg/")
        client.close()
        caches["pages"].clear()


def test_djangos_cache_middleware_still_works_around_it(redis_cache: Any) -> None:
    with override_settings(MIDDLEWARE=[UPDATE, FETCH], CACHE_MIDDLEWARE_SECONDS=30):
        client = Client()
        assert client.get("/cachekit-page/").content == b"cachekit_page run 1"
        assert client.get("/cachekit-page/").content == b"cachekit_page run 1"


# -- the stampede protection ----------------------------------------------------------------
def test_cache_page_runs_the_view_once_for_16_cold_requests(redis_cache: Any) -> None:
    @cache_page(60)
    def slow(request: HttpRequest) -> HttpResponse:
        assert _wait_for_followers(slow, 15), "the other requests never arrived"
        return _count("slow")

    responses: list[HttpResponse] = []
    barrier = threading.Barrier(16)

    def fetch() -> None:
        request = factory.get("/slow/")
        barrier.wait()
        responses.append(slow(request))

    threads = [threading.Thread(target=fetch) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert calls["slow"] == 1
    assert [r.content for r in responses] == [b"slow run 1"] * 16
    assert sum(r["Cache-Status"].endswith("stored") for r in responses) == 1


def test_without_the_lock_16_cold_requests_run_the_view_16_times(redis_cache: Any) -> None:
    inside = threading.Barrier(16, timeout=5)

    @cache_page(60, lock=False)
    def slow(request: HttpRequest) -> HttpResponse:
        inside.wait()  # all 16 are in the view at once
        return _count("slow")

    threads = [threading.Thread(target=lambda: slow(factory.get("/slow/"))) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert calls["slow"] == 16


def test_cache_page_lock_waiters_recompute_when_the_page_is_not_cacheable(
    redis_cache: Any,
) -> None:
    @cache_page(60)
    def private(request: HttpRequest) -> HttpResponse:
        if calls["private"] == 0:
            _wait_for_followers(private, 3)
        response = _count("private")
        response["Cache-Control"] = "private"
        return response

    threads = [threading.Thread(target=lambda: private(factory.get("/p/"))) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert calls["private"] == 4  # nothing was stored: everyone got their own response


async def test_cache_page_on_an_async_view_runs_it_once(redis_cache: Any) -> None:
    @cache_page(60)
    async def slow(request: HttpRequest) -> HttpResponse:
        deadline = time.monotonic() + 5
        while _engine(slow).followers() < 15 and time.monotonic() < deadline:
            await asyncio.sleep(0)  # let the others reach the flight
        return _count("aslow")

    responses = await asyncio.gather(*(slow(factory.get("/aslow/")) for _ in range(16)))
    assert calls["aslow"] == 1
    assert [r.content for r in responses] == [b"aslow run 1"] * 16
    hit = await slow(factory.get("/aslow/"))
    assert "hit" in hit["Cache-Status"] and calls["aslow"] == 1
    await redis_cache.cachekit.aclose()


def test_cache_page_lock_spans_processes(redis_cache: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two decorations of one page stand in for two processes: each has its own in-process
    single-flight, so only cachekit's Redis lock can keep the second from running the view."""
    from cachekit.locks.lock import CacheLock

    a_started, b_waiting = threading.Event(), threading.Event()
    original_acquire = CacheLock.acquire

    def acquire(self: Any, *args: Any, **kwargs: Any) -> bool:
        if kwargs.get("blocking"):  # the waiting acquire, after the lock was found taken
            b_waiting.set()
        return original_acquire(self, *args, **kwargs)

    monkeypatch.setattr(CacheLock, "acquire", acquire)

    def view_a(request: HttpRequest) -> HttpResponse:
        a_started.set()
        assert b_waiting.wait(5), "process B never waited on the lock"
        return _count("a")

    def view_b(request: HttpRequest) -> HttpResponse:
        return _count("b")

    page_a, page_b = cache_page(60)(view_a), cache_page(60)(view_b)
    results: dict[str, HttpResponse] = {}
    thread_a = threading.Thread(target=lambda: results.update(a=page_a(factory.get("/x/"))))
    thread_a.start()
    assert a_started.wait(5)
    results["b"] = page_b(factory.get("/x/"))
    thread_a.join()
    assert calls == {"a": 1}
    assert results["a"].content == results["b"].content == b"a run 1"
    assert "hit" in results["b"]["Cache-Status"]


# -- the response Django sends decides: middleware runs after cache_page ------------------
SESSIONS = "django.contrib.sessions.middleware.SessionMiddleware"
MESSAGES = "django.contrib.messages.middleware.MessageMiddleware"
COOKIE_STORAGE = "django.contrib.messages.storage.cookie.CookieStorage"
FALLBACK_STORAGE = "django.contrib.messages.storage.fallback.FallbackStorage"


@pytest.mark.parametrize(
    ("middleware", "storage"),
    [
        ([SESSIONS, MESSAGES], COOKIE_STORAGE),
        ([MESSAGES, SESSIONS], COOKIE_STORAGE),
        ([MESSAGES], COOKIE_STORAGE),
        ([SESSIONS, MESSAGES], FALLBACK_STORAGE),
    ],
    ids=["sessions-messages", "messages-sessions", "messages-only", "fallback-storage"],
)
def test_a_flash_message_for_one_user_is_never_served_to_another(
    dj_cache: Any, middleware: list[str], storage: str
) -> None:
    """MessageMiddleware writes (or clears) the message cookie after the view: cache_page
    decides on the response Django sends, so a page that set any cookie is not stored."""
    with override_settings(MIDDLEWARE=middleware, MESSAGE_STORAGE=storage):
        alice, bob = Client(), Client()
        alice.get("/flash/", {"who": "alice"})
        assert "payment of alice received" in alice.get("/inbox/").content.decode()
        for _ in range(2):
            assert "alice" not in bob.get("/inbox/").content.decode()
        assert "alice" not in alice.get("/inbox/").content.decode()  # shown once, as Django
        # a page that neither shows nor adds messages sets no cookie: still stored (for
        # requests without cookies: alice's and bob's carry theirs, and get pages of their own)
        first, second = Client().get("/cachekit-page/"), Client().get("/cachekit-page/")
        assert first.content == second.content and "hit" in second["Cache-Status"]


async def test_a_flash_message_is_never_served_to_another_user_async(dj_cache: Any) -> None:
    with override_settings(MIDDLEWARE=[SESSIONS, MESSAGES], MESSAGE_STORAGE=COOKIE_STORAGE):
        alice, bob = AsyncClient(), AsyncClient()
        await alice.get("/flash/", {"who": "alice"})
        page = await alice.get("/async-inbox/")
        assert "payment of alice received" in page.content.decode()
        assert "alice" not in (await bob.get("/async-inbox/")).content.decode()
        assert calls["async_inbox"] == 2
    await dj_cache.cachekit.aclose()


def test_what_middleware_adds_after_the_view_decides_what_is_stored(dj_cache: Any) -> None:
    """Any middleware's response phase, not only Django's own: a page it makes private
    or gives a cookie is not stored; two users share the cache."""
    with override_settings(MIDDLEWARE=[f"{__name__}.PersonalMiddleware"]):
        alice, anonymous = Client(), Client()
        alice.cookies["auth"] = "alice"
        assert alice.get("/dashboard/").content == b"dashboard of alice"
        assert anonymous.get("/dashboard/").content == b"dashboard of anonymous"
        assert "hit" in anonymous.get("/dashboard/")["Cache-Status"]
        assert calls["dashboard"] == 2
        for _ in range(2):
            tracked = anonymous.get("/tracked/")
            assert tracked.cookies["visitor"].value == "v1"
        assert calls["plain"] == 2  # Set-Cookie on every response: never stored


def test_a_page_dropped_unsent_releases_its_waiters(dj_cache: Any) -> None:
    """A middleware that replaces the response (or raises) means cachekit's page is never
    closed: it is settled when dropped, and nothing is stored."""

    class Replacing:
        def __init__(self, get_response: Any) -> None:
            self.get_response = get_response

        def __call__(self, request: HttpRequest) -> HttpResponse:
            self.get_response(request)
            return HttpResponse("replaced")

    global ReplacingMiddleware
    ReplacingMiddleware = Replacing
    with override_settings(MIDDLEWARE=[f"{__name__}.ReplacingMiddleware"]):
        assert Client().get("/cachekit-page/").content == b"replaced"
    assert _engine(cachekit_page)._all_flights() == []
    assert Client().get("/cachekit-page/").content == b"cachekit_page run 2"


def test_an_async_page_served_by_a_wsgi_handler_is_stored(dj_cache: Any) -> None:
    """Under WSGI Django runs an async view in an event loop of its own, gone by the
    time the response is closed: the page is still decided on the final response."""
    with override_settings(MIDDLEWARE=[SESSIONS, MESSAGES], MESSAGE_STORAGE=COOKIE_STORAGE):
        alice, bob = Client(), Client()
        alice.get("/flash/", {"who": "alice"})
        assert "payment of alice received" in alice.get("/async-inbox/").content.decode()
        assert "alice" not in bob.get("/async-inbox/").content.decode()
    first, second = Client().get("/async-page/"), Client().get("/async-page/")
    assert first.content == second.content == b"async_page run 1"
    assert "hit" in second["Cache-Status"]


def _fallback_waiters(view: Any) -> int:
    return sum(flight.waiters for flight in view.page_cache.fallback.flights.in_progress())


def test_the_fallback_runs_a_cold_page_once_for_concurrent_requests(redis_cache: Any) -> None:
    """On a cache that is not a CachekitCache, lock=True still coalesces in the process:
    one thread runs the view, the others wait for it and are served what it stored."""
    locmem = {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "fb"}
    release, runs = threading.Event(), []
    with override_settings(CACHES={"default": {"BACKEND": BACKEND}, "fb": locmem}):

        @cache_page(60, cache="fb")
        def page(request: HttpRequest) -> HttpResponse:
            runs.append(1)
            release.wait(5)
            return HttpResponse(b"fallback page")

        results: list[bytes] = []
        threads = [
            threading.Thread(target=lambda: results.append(page(factory.get("/fb/")).content))
            for _ in range(6)
        ]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 5
        while _fallback_waiters(page) < 5 and time.monotonic() < deadline:
            time.sleep(0.001)
        waiting = _fallback_waiters(page)
        release.set()
        for thread in threads:
            thread.join(5)
        caches["fb"].clear()
    assert waiting == 5 and len(runs) == 1
    assert results == [b"fallback page"] * 6
    assert page.page_cache.fallback.flights.in_progress() == []


async def test_the_async_fallback_runs_a_cold_page_once(redis_cache: Any) -> None:
    locmem = {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "afb"}
    release, runs = asyncio.Event(), []
    with override_settings(CACHES={"default": {"BACKEND": BACKEND}, "afb": locmem}):

        @cache_page(60, cache="afb")
        async def page(request: HttpRequest) -> HttpResponse:
            runs.append(1)
            await release.wait()
            return HttpResponse(b"async fallback page")

        tasks = [asyncio.ensure_future(page(factory.get("/afb/"))) for _ in range(6)]
        for _ in range(1000):  # the tasks join one by one, no time passing
            if _fallback_waiters(page) == 5:
                break
            await asyncio.sleep(0)
        waiting = _fallback_waiters(page)
        release.set()
        responses = await asyncio.wait_for(asyncio.gather(*tasks), 5)
        caches["afb"].clear()
    assert waiting == 5 and len(runs) == 1
    assert [response.content for response in responses] == [b"async fallback page"] * 6
    assert page.page_cache.fallback.flights.in_progress() == []


def test_a_bump_by_another_process_is_seen_by_the_django_backend(
    redis_server: RedisServer, prefix: str
) -> None:
    """cache.cachekit.invalidate_all() in one process; another's Django backend misses."""
    options = {"generation_poll": 0}
    with override_settings(
        CACHES=_caches_setting(redis_server.url, KEY_PREFIX=prefix, OPTIONS=options)
    ):
        cache = caches["default"]
        cache.set("a", 1)
        # another process over the namespace: its own view of the generation
        other = cache.cachekit.with_options(generation_poll=0.5)
        assert other._generation is not cache.cachekit._generation
        assert other.invalidate_all()
        assert cache.get("a") is None
        cache.set("a", 2)
        assert cache.get("a") == 2
        cache.clear()
