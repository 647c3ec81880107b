"""Operation arguments: one TTL rule on every path and backend, incr() takes an int, and
Django's namespace never meets a plain cachekit cache's (real redis-server where Redis is
involved: see conftest's any_cache)."""

from __future__ import annotations

import asyncio
import math
from datetime import timedelta
from typing import Any

import pytest

from cachekit import Cache, ConfigurationError, InvalidArgumentError
from cachekit.core.policy import FOREVER, ttl_seconds
from cachekit.testing.servers import RedisServer

from conftest import unique_prefix

NAN = float("nan")
INF = float("inf")


# -- the rule itself (pure) -------------------------------------------------------------------
def test_ttl_rule() -> None:
    assert ttl_seconds(None) is None
    assert ttl_seconds(30) == 30.0 and ttl_seconds(timedelta(minutes=1)) == 60.0
    assert ttl_seconds(0) == 0 and ttl_seconds(-5) == 0 and ttl_seconds(-INF) == 0
    assert ttl_seconds(INF) is None and ttl_seconds(FOREVER) is None
    assert ttl_seconds(1e300) is None  # past what Redis can store: no expiry, as inf
    for bad in (NAN, "60", True, [], b"1"):
        with pytest.raises(InvalidArgumentError):
            ttl_seconds(bad)
    # usable as either built-in error
    assert issubclass(InvalidArgumentError, TypeError)
    assert issubclass(InvalidArgumentError, ValueError)


# -- on every backend ---------------------------------------------------------------------------
def test_infinite_ttl_is_no_expiry_on_every_backend(any_cache: Cache) -> None:
    """Was: stored on memory, refused by Redis (PX inf), the set silently False."""
    assert any_cache.set("inf", 1, ttl=INF) is True
    assert any_cache.get("inf") == 1 and any_cache.ttl("inf") is None
    assert any_cache.set("huge", 2, ttl=1e300) is True
    assert any_cache.get("huge") == 2 and any_cache.ttl("huge") is None
    assert any_cache.set_many({"a": 1, "b": 2}, ttl=INF) is True
    assert any_cache.ttl("a") is None and any_cache.get("b") == 2
    assert any_cache.add("added", 1, ttl=INF) is True and any_cache.ttl("added") is None
    any_cache.set("short", 1, ttl=30)
    assert any_cache.expire("short", INF) is True and any_cache.ttl("short") is None
    assert any_cache.get_or_set("loaded", lambda: 5, ttl=INF) == 5
    assert any_cache.ttl("loaded") is None and any_cache.get("loaded") == 5


@pytest.mark.parametrize("bad", [NAN, "60", True, object()])
def test_a_bad_ttl_raises_and_loses_nothing(any_cache: Cache, bad: Any) -> None:
    """Was: ttl=nan deleted the entry (nan > 0 is false: "do not keep")."""
    any_cache.set("k", "kept", ttl=60)
    calls = [
        lambda: any_cache.set("k", "new", ttl=bad),
        lambda: any_cache.add("k", "new", ttl=bad),
        lambda: any_cache.set_many({"k": "new"}, ttl=bad),
        lambda: any_cache.expire("k", bad),
        lambda: any_cache.incr("n", ttl=bad),
        lambda: any_cache.get_or_set("other", lambda: 1, ttl=bad),
        lambda: asyncio.run(any_cache.aset("k", "new", ttl=bad)),
        lambda: asyncio.run(any_cache.aexpire("k", bad)),
    ]
    for call in calls:
        with pytest.raises(InvalidArgumentError, match="ttl"):
            call()
    assert any_cache.get("k") == "kept"
    left = any_cache.ttl("k")
    assert left is not None and 50 < left <= 60
    assert not any_cache.exists("n") and not any_cache.exists("other")


def test_zero_or_negative_ttl_means_do_not_keep(any_cache: Cache) -> None:
    any_cache.set("k", 1)
    assert any_cache.set("k", 2, ttl=-1) is False and not any_cache.exists("k")
    any_cache.set("k", 1)
    assert any_cache.expire("k", 0) is True and not any_cache.exists("k")
    assert any_cache.add("k", 1, ttl=timedelta(seconds=-1)) is False
    assert not any_cache.exists("k")


def test_incr_takes_an_int(any_cache: Cache) -> None:
    """Was: incr("k", 1.5) added 1 (int() truncated) on every backend."""
    for bad in (1.5, True, "2", None):
        with pytest.raises(InvalidArgumentError, match="int"):
            any_cache.incr("n", bad)  # type: ignore[arg-type]
    assert not any_cache.exists("n")  # nothing was created
    assert any_cache.incr("n", 2) == 2
    with pytest.raises(InvalidArgumentError, match="int"):
        asyncio.run(any_cache.aincr("n", 0.5))  # type: ignore[arg-type]
    assert any_cache.get("n") == 2
    with pytest.raises(InvalidArgumentError, match="ttl"):
        any_cache.incr("m", 1, ttl=0)  # a counter that is not kept: a bug, not a no-op
    assert any_cache.incr("m", 1, ttl=INF) == 1 and any_cache.ttl("m") is None


def test_decorators_and_strategies_refuse_a_bad_ttl_when_made(any_cache: Cache) -> None:
    with pytest.raises(InvalidArgumentError):
        any_cache.cached(ttl=NAN)(lambda x: x)
    with pytest.raises(InvalidArgumentError):
        any_cache.updates(key="u:{x}", ttl=NAN)(lambda x: x)
    with pytest.raises(InvalidArgumentError):
        any_cache.write_through(key="u:{}", load=lambda i: i, store=lambda i, v: None, ttl=NAN)

    @any_cache.cached(ttl=INF)
    def forever(x: int) -> int:
        return x

    assert forever(3) == 3
    assert any_cache.ttl(forever.key(3)) is None


def test_default_ttl_follows_the_same_rule() -> None:
    assert Cache(default_ttl=INF).default_ttl is None
    assert Cache(default_ttl=timedelta(seconds=5)).default_ttl == 5.0  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="default_ttl"):
        Cache(default_ttl=NAN)
    with pytest.raises(ConfigurationError, match="default_ttl"):
        Cache("memory://?default_ttl=nan")
    assert Cache("memory://?default_ttl=inf").default_ttl is None
    assert math.isclose(Cache("memory://?default_ttl=1.5").default_ttl or 0, 1.5)


# -- Django's namespace and a plain cache's, on one real Redis ----------------------------------
def _django_backend(url: str, **params: Any) -> Any:
    import django_settings

    django_settings.configure("test_django")
    from cachekit.integrations.django import CachekitCache

    return CachekitCache(url, params)


def test_django_and_plain_namespaces_are_disjoint(redis_server: RedisServer) -> None:
    """Was: KEY_PREFIX "shop" and Cache(prefix="shop") both wrote "shop:1:answer"; each
    read the other's entries and each clear() removed the other's."""
    import redis

    from cachekit.integrations.django import close_shared_caches

    prefix = unique_prefix()
    django = _django_backend(redis_server.url, KEY_PREFIX=prefix)
    plain = Cache(redis_server.url, prefix=prefix, serializer="pickle", secret="x")
    try:
        django.set("answer", "django's")
        assert plain.get("answer") is None  # not the same key
        plain.set("answer", "plain's")
        assert django.get("answer") == "django's" and plain.get("answer") == "plain's"
        assert plain.clear() == 1
        assert django.get("answer") == "django's"
        plain.set("answer", "plain's")
        django.clear()
        assert plain.get("answer") == "plain's" and django.get("answer") is None
        # nor can any other plain namespace reach Django's: they cannot start with "!"
        django.set("answer", "django's")
        raw = redis.Redis.from_url(redis_server.url)
        # (django.clear() bumped the namespace generation: "!django:{prefix}%g1:")
        assert raw.keys(f"!django:{prefix}*") == [f"!django:{prefix}%g1:1:answer".encode()]
        raw.close()
        with pytest.raises(ConfigurationError):
            Cache(redis_server.url, prefix=f"!django:{prefix}")
    finally:
        plain.clear()
        django.clear()
        plain.close()
        close_shared_caches()
