"""The backend contract's capabilities (cachekit.backends.base): asked once by the cache,
and features wired from the answers, never from the backend's type."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pytest
import redis
from conftest import unique_prefix

from cachekit import Cache
from cachekit.backends import MemoryBackend
from cachekit.backends.base import capabilities_of
from cachekit.backends.redis import backends_for_url
from cachekit.exceptions import ConfigurationError
from cachekit.testing.servers import RedisServer


class RemoteStore:
    """A third-party remote backend: the key/value contract only (no capabilities),
    over a memory store standing in for its server."""

    local = False

    def __init__(self) -> None:
        self._store = MemoryBackend()
        self.translate_error = self._store.translate_error

    def get(self, key: str) -> Any:
        return self._store.get(key)

    def get_many(self, keys: Sequence[str]) -> list[Any]:
        return self._store.get_many(keys)

    def set(self, key: str, value: Any, ttl: float | None) -> bool:
        return self._store.set(key, value, ttl)

    def add(self, key: str, value: Any, ttl: float | None) -> bool:
        return self._store.add(key, value, ttl)

    def set_many(self, items: Mapping[str, Any], ttl: float | None) -> None:
        self._store.set_many(items, ttl)

    def delete(self, key: str) -> bool:
        return self._store.delete(key)

    def delete_many(self, keys: Sequence[str]) -> int:
        return self._store.delete_many(keys)

    def exists(self, key: str) -> bool:
        return self._store.exists(key)

    def ttl(self, key: str) -> Any:
        return self._store.ttl(key)

    def expire(self, key: str, ttl: float | None) -> bool:
        return self._store.expire(key, ttl)

    def incr(self, key: str, delta: int, ttl: float | None) -> int:
        return self._store.incr(key, delta, ttl)

    def delete_pattern(self, pattern: str) -> int:
        return self._store.delete_pattern(pattern)

    def ping(self) -> bool:
        return True

    def lock(self, key: str, ttl: float) -> Any:
        return self._store.lock(key, ttl)

    def close(self) -> None:
        pass


class Forwarding:
    """A third-party backend that is not cachekit's Redis class but offers the same
    capabilities (here: forwarded to one): the cache must use them."""

    local = False

    def __init__(self, inner: Any, without: tuple[str, ...] = ()) -> None:
        self._inner = inner
        self.translate_error = inner.translate_error
        for name in ("get", "get_many", "set", "add", "set_many", "delete", "delete_many"):
            setattr(self, name, getattr(inner, name))
        for name in ("exists", "ttl", "expire", "incr", "delete_pattern", "ping", "lock"):
            setattr(self, name, getattr(inner, name))
        for name in ("scripts", "wakeups", "streams", "scan", "close"):
            if name not in without:
                setattr(self, name, getattr(inner, name))


def test_a_remote_backend_without_scripts_refuses_tags() -> None:
    """Tag sets kept in this process for a remote store would let every other process
    serve entries invalidated here: a clear error instead (it used to be silent)."""
    cache = Cache(backend=RemoteStore(), prefix=unique_prefix())
    assert cache.set("plain", 1) and cache.get("plain") == 1  # the key/value part works
    with pytest.raises(ConfigurationError, match="tags need a backend"):
        cache.set("k", 1, tags=["t"])
    with pytest.raises(ConfigurationError, match="tags need a backend"):
        cache.invalidate_tags("t")

    @cache.cached(tags=["users"])
    def load(n: int) -> int:
        return n

    with pytest.raises(ConfigurationError, match="tags need a backend"):
        load(1)
    cache.clear()  # no tags could have been written: clear() still works
    assert cache.get("plain") is None


def test_a_remote_backend_without_scripts_stores_loads_plainly() -> None:
    """No lease check is possible there: a load stores as a plain set, an invalidation
    is a plain delete."""
    cache = Cache(backend=RemoteStore(), prefix=unique_prefix())
    calls: list[int] = []

    @cache.cached
    def load(n: int) -> int:
        calls.append(n)
        return n * 2

    assert load(2) == 4 and load(2) == 4 and calls == [2]
    load.invalidate(2)
    assert load(2) == 4 and calls == [2, 2]


def test_capabilities_are_asked_of_the_backend_not_its_type(redis_url: str) -> None:
    sync, _ = backends_for_url(redis_url, 1.0, 1.0)
    cache = Cache(backend=Forwarding(sync), prefix=unique_prefix())
    writer = Cache(redis_url, prefix=cache.namespace.prefix)
    assert cache.set("k", 1, tags=["t"])
    assert writer.get("k") == 1
    assert writer.invalidate_tags("t") == 1  # the tag set lives in Redis, seen by all
    assert cache.get("k") is None
    cache.close()
    writer.close()


def test_what_the_built_in_backends_offer(redis_url: str) -> None:
    memory = MemoryBackend()
    caps = capabilities_of(memory, None)
    assert caps.local and caps.scripts is None and caps.streams is None
    assert caps.wakeups is None and caps.scan is None
    assert caps.stats is not None and caps.stats()["max_entries"] == memory.max_entries
    sync, async_ = backends_for_url(redis_url, 1.0, 1.0)
    caps = capabilities_of(sync, async_)
    assert not caps.local and caps.stats is None
    offered = [caps.scripts, caps.ascripts, caps.wakeups, caps.awakeups]
    offered += [caps.streams, caps.astreams, caps.scan, caps.ascan]
    assert all(one is not None for one in offered)
    sync.close()


def test_shared_tells_a_remote_backend_from_an_in_process_one(redis_url: str) -> None:
    """What the HTTP drivers ask to decide on cross-process locks (they used to compare
    the stats' backend name with "memory": an in-process third-party store counted as
    remote)."""
    assert not Cache().shared
    assert not Cache(backend=MemoryBackend()).shared  # described as "local backend"
    assert Cache(backend=RemoteStore()).shared
    remote = Cache(redis_url)
    assert remote.shared
    remote.close()


def test_the_http_driver_takes_cross_process_locks_only_on_a_shared_backend(
    redis_url: str,
) -> None:
    from cachekit.http import SyncHttpCache
    from cachekit.http import HttpCachePolicy

    policy = HttpCachePolicy()
    assert not SyncHttpCache(Cache(backend=MemoryBackend()), policy).use_lock
    assert not SyncHttpCache(Cache(), policy).use_lock
    remote = Cache(redis_url)
    assert SyncHttpCache(remote, policy).use_lock
    remote.close()


def test_scripts_survive_a_server_that_forgot_them(private_redis: RedisServer) -> None:
    """A restarted (or SCRIPT FLUSHed) Redis answers EVALSHA with NOSCRIPT: scripts()
    sends the text (run) or loads it and sends the batch again (batch), every time."""
    sync, _ = backends_for_url(private_redis.url, 1.0, 1.0)
    scripts = sync.scripts()
    admin = redis.Redis.from_url(private_redis.url)
    echo = "return ARGV[1]"
    for _ in range(2):
        admin.script_flush()
        assert scripts.run(echo, [], [b"x"]) == b"x"
        admin.script_flush()
        replies = scripts.batch(lambda b: (b.set("k", b"1"), b.script(echo, [], [b"y"])))
        assert replies == [True, b"y"]
    admin.set("text", b"a")

    def failing(batch: Any) -> None:
        batch.incr("text")
        batch.set("after", b"1")

    with pytest.raises(redis.exceptions.ResponseError):  # the first error, raised...
        scripts.batch(failing)
    assert admin.get("after") == b"1"  # ...after the whole batch ran
    sync.close()
    admin.close()


def test_features_survive_a_server_that_forgot_their_scripts(private_redis: RedisServer) -> None:
    cache = Cache(private_redis.url, prefix=unique_prefix())
    admin = redis.Redis.from_url(private_redis.url)
    calls: list[int] = []

    @cache.cached(tags=["t"], lock=True)
    def load(n: int) -> int:
        calls.append(n)
        return n

    admin.script_flush()
    assert cache.set("k", 1, tags=["t"])  # the tag registration batch
    admin.script_flush()
    assert load(1) == 1 and load(1) == 1 and calls == [1]  # the stampede's BEGIN/FINISH
    admin.script_flush()
    assert cache.invalidate_tags("t") == 2  # INVALIDATE by run(), the marks by text
    assert cache.get("k") is None and load(1) == 1 and calls == [1, 1]
    assert cache.stats()["errors"] == 0
    cache.close()
    admin.close()


def test_tags_need_scan_as_well_as_scripts(redis_url: str) -> None:
    """clear() finds a namespace's tag sets by scanning: without scan() a remote backend
    gets no tags (and clear() still works); its other capabilities are still used."""
    sync, _ = backends_for_url(redis_url, 1.0, 1.0)
    cache = Cache(backend=Forwarding(sync, without=("scan",)), prefix=unique_prefix())
    with pytest.raises(ConfigurationError, match="scan"):
        cache.set("k", 1, tags=["t"])
    calls: list[int] = []

    @cache.cached(lock=True)
    def load(n: int) -> int:
        calls.append(n)
        return n

    assert load(1) == 1 and load(1) == 1 and calls == [1]
    cache.clear()
    assert load(1) == 1 and calls == [1, 1]
    cache.close()
