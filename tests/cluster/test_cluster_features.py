"""Every feature's main flow on a 3-primary Redis Cluster, behind Sentinel and on a
3-primary Valkey cluster, sync and async, with ``on_error="raise"`` (a CROSSSLOT or any
other backend error fails the test instead of failing open) and no warning logged by
cachekit. The ``url`` and ``cache`` fixtures: ``topology_fixtures.py``; the async
twins of these flows: ``test_cluster_features_async.py``."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time
import uuid
import warnings
from collections.abc import Callable
from typing import Any

import pytest
import topology_fixtures

from cachekit import Cache
from cachekit.exceptions import LockError
from cachekit.testing.servers import ClusterServers

url = topology_fixtures.url  # the fixtures the sync and async modules share
cache = topology_fixtures.cache


def test_many_keys_across_slots(cache: Cache) -> None:
    items = {f"user:{i}": {"id": i} for i in range(200)}  # spread over every primary
    assert cache.set_many(items, ttl=60)
    assert cache.get_many(list(items)) == items
    assert cache.delete_many([f"user:{i}" for i in range(0, 200, 2)] + ["absent"]) == 100
    odd_ones = [i for i in range(1, 200, 2) if str(i).startswith("1")]
    assert cache.delete_pattern("user:1*") == len(odd_ones)
    left = cache.get_many(list(items))
    assert set(left) == {f"user:{i}" for i in range(1, 200, 2) if not str(i).startswith("1")}
    assert cache.clear() == len(left)
    assert cache.get_many(list(items)) == {}


def test_cached_miss_then_hit_and_invalidate(cache: Cache) -> None:
    calls: list[int] = []

    @cache.cached(ttl=60, key="user:{user_id}")
    def user(user_id: int) -> dict[str, int]:
        calls.append(user_id)
        return {"id": user_id}

    assert [user(i) for i in range(20)] == [{"id": i} for i in range(20)]
    assert [user(i) for i in range(20)] == [{"id": i} for i in range(20)]
    assert calls == list(range(20))
    assert user.invalidate(3) is True
    assert user(3) == {"id": 3}
    assert calls[-1] == 3 and len(calls) == 21


def test_tags_spanning_slots_invalidate(cache: Cache) -> None:
    for i in range(50):
        cache.set(f"item:{i}", i, tags=("items", f"group:{i % 3}"))
    cache.set("other", 1, tags=("others",))
    assert cache.invalidate_tags("group:1") == len(range(1, 50, 3))
    assert cache.get("item:1") is None and cache.get("item:0") == 0
    assert cache.invalidate_tags("items") == 50 - len(range(1, 50, 3))
    assert cache.get_many([f"item:{i}" for i in range(50)]) == {}
    assert cache.get("other") == 1

    calls: list[int] = []

    @cache.cached(ttl=60, key="product:{pid}", tags=("products",))
    def product(pid: int) -> int:
        calls.append(pid)
        return pid * 10

    assert [product(i) for i in range(10)] == [i * 10 for i in range(10)]
    assert cache.invalidate_tags("products") == 10
    assert product(4) == 40
    assert calls == [*range(10), 4]


def test_invalidates_and_write_through(cache: Cache) -> None:
    rows = {1: "one", 2: "two"}
    users = cache.write_through(key="user:{}", load=rows.get, store=rows.__setitem__)
    assert users.get(1) == "one"
    users.set(1, "uno")
    assert rows[1] == "uno" and users.get(1) == "uno"

    @cache.invalidates(key="user:{user_id}")
    def delete_user(user_id: int) -> None:
        rows.pop(user_id)

    delete_user(1)
    assert cache.get("user:1") is None


def test_lock_excludes_and_expires(cache: Cache) -> None:
    with cache.lock("order:1", ttl=10, timeout=1):
        got: list[bool] = []
        other = threading.Thread(
            target=lambda: got.append(cache.lock("order:1", ttl=10).acquire(blocking=False))
        )
        other.start()
        other.join()
        assert got == [False]
    lock = cache.lock("order:1", ttl=10)
    assert lock.acquire(blocking=False)
    lock.release()
    with pytest.raises(LockError):
        lock.release()


def test_get_or_set_with_lock_computes_once(cache: Cache, url: str) -> None:
    # another "process": its own Cache and clients, coordinated through Redis only
    other = Cache(url, prefix=cache.prefix, on_error="raise")
    started, release = threading.Event(), threading.Event()
    calls: list[int] = []
    results: list[Any] = []

    def load() -> str:
        calls.append(1)
        started.set()
        assert release.wait(10)
        return "computed"

    leader = threading.Thread(
        target=lambda: results.append(cache.get_or_set("hot", load, ttl=60, lock=True))
    )
    leader.start()
    assert started.wait(10)
    waiters = [
        threading.Thread(
            target=lambda c=c: results.append(c.get_or_set("hot", load, ttl=60, lock=True))
        )
        for c in (cache, other, other, cache)
    ]
    for waiter in waiters:
        waiter.start()
    release.set()
    for thread in (leader, *waiters):
        thread.join(10)
    assert results == ["computed"] * 5
    assert calls == [1]
    other.close()


def test_stale_while_revalidate_and_early_refresh(cache: Cache) -> None:
    calls: list[int] = []

    @cache.cached(ttl=60, stale_ttl=30, early_refresh=True)
    def value() -> int:
        calls.append(1)
        return len(calls)

    assert value() == 1
    assert value() == 1  # a hit through the entry's metadata (logical expiry, delta)
    assert len(calls) == 1
    assert value.refresh() == 2  # recompute and store now
    assert value() == 2
    assert len(calls) == 2


def test_write_behind_flushes(cache: Cache) -> None:
    stored: dict[Any, Any] = {}
    lock = threading.Lock()

    def store_many(batch: dict[Any, Any]) -> None:
        with lock:
            stored.update(batch)

    users = cache.write_behind(key="user:{}", store_many=store_many, batch_size=20)
    for i in range(100):
        users.set(i, {"id": i})
    users.flush(timeout=20)
    assert stored == {i: {"id": i} for i in range(100)}
    assert users.get(7) == {"id": 7}
    assert users.dead_letters() == []
    users.close()


def test_async_flows(cache: Cache) -> None:
    calls: list[int] = []

    @cache.cached(ttl=60, key="a:{x}", tags=("as",))
    async def double(x: int) -> int:
        calls.append(x)
        await asyncio.sleep(0)
        return 2 * x

    async def scenario() -> None:
        assert [await double(i) for i in range(10)] == [2 * i for i in range(10)]
        assert [await double(i) for i in range(10)] == [2 * i for i in range(10)]
        assert calls == list(range(10))
        assert await cache.ainvalidate_tags("as") == 10
        await cache.aset_many({f"m{i}": i for i in range(30)})
        assert await cache.aget_many([f"m{i}" for i in range(30)]) == {
            f"m{i}": i for i in range(30)
        }
        assert await cache.adelete_pattern("m1*") == 11
        async with cache.lock("alock", ttl=5):
            assert not await cache.lock("alock", ttl=5).aacquire(blocking=False)

        loads: list[int] = []

        async def load() -> str:
            loads.append(1)
            await asyncio.sleep(0.05)
            return "v"

        got = await asyncio.gather(
            *(cache.aget_or_set("g", load, ttl=60, lock=True) for _ in range(5))
        )
        assert got == ["v"] * 5 and loads == [1]

    asyncio.run(scenario())


@pytest.mark.parametrize("key", ["a}b", "{}x", "}{", "x{y}z", "{", "{shop}:cart"])
def test_companion_keys_share_the_entry_slot(key: str) -> None:
    """A lock, wake-up list or invalidation mark lands in its entry's cluster slot, also
    for a key with a brace but no valid hash tag (an empty dict argument renders "{}")."""
    from redis.crc import key_slot

    from cachekit.stampede.rules import companion_key

    for ns in ("p:1:", "shop%3Aeu:v2:"):
        entry = ns + key
        for kind in ("lock", "inv", "done:abc"):
            companion = companion_key(ns, kind, entry)
            assert companion != entry
            assert key_slot(companion.encode()) == key_slot(entry.encode()), companion


@pytest.mark.parametrize("key", ["a}b", "{}x", "}{", "x{y}z"])
def test_braces_in_keys_with_lock_and_tags(cache: Cache, key: str) -> None:
    assert cache.get_or_set(key, lambda: "v", ttl=30, lock=True) == "v"
    cache.set(key + "t", 1, tags=("t}", "{t"))
    assert cache.invalidate_tags("t}") == 1
    with cache.lock(key, ttl=5, timeout=1):
        pass

    @cache.cached(ttl=30, lock=True)
    def size(d: dict[str, int]) -> int:
        return len(d)

    assert size({}) == 0 and size({}) == 0
    assert cache.delete(key) is True


def test_http_pages_cached_and_purged_by_path(cache: Cache) -> None:
    """The Starlette adapter on the topology: a page stored on one request is served on
    the next; ``invalidate_path`` purges by path pattern (a SCAN of every primary)."""
    from cachekit.integrations.starlette import CacheMiddleware
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    with warnings.catch_warnings():  # starlette 1.x warns when it finds httpx, not httpx2
        warnings.simplefilter("ignore")
        from starlette.testclient import TestClient

    runs: list[str] = []

    async def product(request: Request) -> PlainTextResponse:
        runs.append(request.path_params["pid"])
        return PlainTextResponse(f"product {request.path_params['pid']}")

    app = Starlette(routes=[Route("/products/{pid}", product)])
    middleware = CacheMiddleware(app, cache=cache, ttl=60)
    with TestClient(middleware) as client:
        for pid in map(str, range(10)):
            assert client.get(f"/products/{pid}").text == f"product {pid}"
            second = client.get(f"/products/{pid}")
            assert second.headers["cache-status"].startswith("cachekit; hit")
        assert runs == [str(pid) for pid in range(10)]
        assert middleware.invalidate_path("/products/*") == 10
        assert client.get("/products/3").text == "product 3"
        assert runs[-1] == "3" and len(runs) == 11


def test_many_keys_take_one_round_trip_per_primary(redis_cluster: ClusterServers) -> None:
    """get_many / set_many / delete_many of keys on every slot: one request per primary
    (redis-py's pipeline per node), as ``mget_nonatomic``; a hit is one request."""
    import redis.connection
    from redis.cluster import RedisCluster

    cache = Cache(redis_cluster.url, prefix=f"rt{uuid.uuid4().hex[:8]}", on_error="raise")
    keys = [f"item:{i}" for i in range(100)]
    cache.get("warm-up")  # the cluster's slot map is read once, first
    sends: list[int] = []
    original = redis.connection.Connection.send_packed_command

    def counting(self: Any, *args: Any, **kwargs: Any) -> Any:
        sends.append(1)
        return original(self, *args, **kwargs)

    def requests(call: Callable[[], Any]) -> int:
        sends.clear()
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(redis.connection.Connection, "send_packed_command", counting)
            call()
        return len(sends)

    primaries = len(redis_cluster.primaries())
    cache.set_many({k: 1 for k in keys}, ttl=60)  # connects to every primary
    assert requests(lambda: cache.set_many({k: 1 for k in keys}, ttl=60)) == primaries
    assert requests(lambda: cache.get_many(keys)) == primaries
    assert requests(lambda: cache.get(keys[0])) == 1
    cache.delete_many(keys[:1])  # loads the mark script
    cache.set_many({k: 1 for k in keys}, ttl=60)
    # a mark (a script) and a delete per key, each queued on its slot's node
    assert requests(lambda: cache.delete_many(keys)) == primaries

    # the write-behind worker's read of its stream: one request (no COMMAND GETKEYS)
    streams = cache._backend.streams()
    stream = "{wb-rt}:stream"
    client = RedisCluster(host="127.0.0.1", port=redis_cluster.ports[0])
    client.xgroup_create(stream, "g", id="0", mkstream=True)
    client.xadd(stream, {"v": "1"})
    streams.xreadgroup("g", "c", {stream: ">"}, 10)  # connects to the stream's node
    client.xadd(stream, {"v": "2"})
    got: list[Any] = []
    assert requests(lambda: got.append(streams.xreadgroup("g", "c", {stream: ">"}, 10))) == 1
    ((name, entries),) = got[0]
    assert name == stream.encode() and [fields for _, fields in entries] == [{b"v": b"2"}]
    client.delete(stream)
    client.close()
    cache.clear()
    cache.close()


def test_rate_limiter(cache: Cache) -> None:
    limiter = cache.rate_limiter("api", rate="5/minute")
    assert [limiter.hit(f"user:{u}").allowed for u in range(20)] == [True] * 20
    assert [limiter.hit("user:1").allowed for _ in range(5)] == [True] * 4 + [False]
    limiter.reset("user:1")
    assert limiter.hit("user:1").allowed

    async def scenario() -> None:
        assert (await limiter.ahit("user:2")).remaining == 3

    asyncio.run(scenario())


def test_flask_views_cached(url: str) -> None:
    """The Flask adapter configured with the topology's URL (CACHEKIT_URL)."""
    from cachekit.integrations.flask import FlaskCache
    from flask import Flask

    app = Flask(__name__)
    app.config["CACHEKIT_URL"] = url
    app.config["CACHEKIT_PREFIX"] = f"fl{uuid.uuid4().hex[:8]}"
    fcache = FlaskCache(app)
    runs: list[int] = []

    @app.get("/products/<int:pid>")
    @fcache.cached(ttl=60)
    def product(pid: int) -> dict[str, int]:
        runs.append(pid)
        return {"id": pid}

    client = app.test_client()
    for pid in range(5):
        assert client.get(f"/products/{pid}").json == {"id": pid}
        assert client.get(f"/products/{pid}").json == {"id": pid}
    assert runs == list(range(5))
    with app.app_context():
        fcache.cache.clear()


def test_django_cache_backend(url: str) -> None:
    """Django's cache API through CachekitCache with the topology's URL as LOCATION (in a
    process of its own: Django's settings are configured once per process)."""
    script = f"""
import django
from django.conf import settings
settings.configure(SECRET_KEY="test-only", CACHES={{"default": {{
    "BACKEND": "cachekit.integrations.django.CachekitCache",
    "LOCATION": {url!r}, "KEY_PREFIX": "dj{uuid.uuid4().hex[:8]}",
    "OPTIONS": {{"on_error": "raise"}}}}}})
django.setup()
from django.core.cache import cache
keys = {{f"k{{i}}": i for i in range(50)}}
cache.set_many(keys, 60)
assert cache.get_many(list(keys)) == keys, cache.get_many(list(keys))
assert cache.incr("k1", 5) == 6
assert cache.add("k2", "x") is False
cache.delete_many(list(keys)[:25])
assert len(cache.get_many(list(keys))) == 25
cache.clear()
assert cache.get_many(list(keys)) == {{}}
print("ok")
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


def test_stale_value_served_while_one_refresh_runs(cache: Cache) -> None:
    calls: list[int] = []
    refreshed = threading.Event()

    @cache.cached(ttl=0.2, stale_ttl=30)
    def value() -> int:
        calls.append(1)
        if len(calls) == 2:
            refreshed.set()
        return len(calls)

    assert value() == 1
    time.sleep(0.3)  # waiting for the clock: the entry is past its ttl, inside stale_ttl
    assert value() == 1  # stale, and a background refresh starts
    assert refreshed.wait(10)
    deadline = time.monotonic() + 10
    while (got := value()) == 1:  # the refresh's store lands just after the function returned
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert got == 2  # fresh, or stale itself (ttl 0.2 s: a loaded machine polls slowly)


# -- invalidate_all(): the generation key on one slot, entries keep their slot rules -------
def test_invalidate_all_across_processes(url: str, cache: Cache) -> None:
    other = Cache(url, prefix=cache.prefix, on_error="raise", generation_poll=0)
    calls: list[int] = []

    @other.cached(ttl=60, lock=True)
    def one(x: int) -> int:
        calls.append(x)
        return x

    try:
        cache.set("user:{42}", "old", tags=("users",))
        assert one(1) == 1 and one(1) == 1 and calls == [1]
        held = cache.lock("order:1", ttl=30)
        assert held.acquire()
        assert cache.invalidate_all() is True
        assert other.get("user:{42}") is None and other.generation == 1
        assert one(1) == 1 and calls == [1, 1]  # lock + guarded store in the new slots
        other.set("user:{42}", "new", tags=("users",))
        assert cache.get("user:{42}") == "new"
        assert not other.lock("order:1", ttl=30, blocking=False).acquire()  # still held
        held.release()
        assert cache.invalidate_tags("users") == 1 and other.get("user:{42}") is None
        other.set("kept", 1)
        assert cache.clear() >= 1 and other.get("kept") is None  # every generation
    finally:
        other.close()


async def test_async_invalidate_all(url: str) -> None:
    prefix = f"f{uuid.uuid4().hex[:10]}"
    one = Cache(url, prefix=prefix, on_error="raise")
    other = Cache(url, prefix=prefix, on_error="raise", generation_poll=0)
    try:
        await one.aset("k", "old")
        assert await one.ainvalidate_all() is True
        assert await other.aget("k") is None
        await other.aset("k", "new")
        assert await one.aget("k") == "new"
        await one.aclear()
    finally:
        await one.aclose()  # the async clients too (a cluster's nodes warn if left open)
        await other.aclose()
