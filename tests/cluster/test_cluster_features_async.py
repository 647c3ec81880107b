"""The async twins of ``test_cluster_features.py``: every feature's main flow through the
``a*`` API on a 3-primary Redis Cluster, behind Sentinel and on a 3-primary Valkey
cluster, with ``on_error="raise"`` and no warning logged by cachekit (the ``cache``
fixture, topology_fixtures.py). Each test runs its scenario in an event loop of its
own; another ``Cache`` on the same URL stands for another process."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import redis
import topology_fixtures

from cachekit import Cache
from cachekit.exceptions import LockError, LockNotOwnedError
from cachekit.testing.servers import ClusterServers, SentinelServers

url = topology_fixtures.url  # the fixtures the sync and async modules share
cache = topology_fixtures.cache


def _run(scenario: Callable[[], Awaitable[None]], *caches: Cache) -> None:
    """Run ``scenario`` in a new event loop; the caches' async clients close inside it."""

    async def main() -> None:
        try:
            await scenario()
        finally:
            for cache in caches:
                await cache.aclose()

    asyncio.run(main())


def _other(cache: Cache, url: str) -> Cache:
    return Cache(url, prefix=cache.prefix, on_error="raise")


def test_async_many_keys_across_slots(cache: Cache) -> None:
    items = {f"user:{i}": {"id": i} for i in range(200)}  # spread over every primary

    async def scenario() -> None:
        assert await cache.aset_many(items, ttl=60)
        assert await cache.aget_many(list(items)) == items
        gone = [f"user:{i}" for i in range(0, 200, 2)]
        assert await cache.adelete_many([*gone, "absent"]) == 100
        odd_ones = [i for i in range(1, 200, 2) if str(i).startswith("1")]
        assert await cache.adelete_pattern("user:1*") == len(odd_ones)
        left = await cache.aget_many(list(items))
        assert set(left) == {f"user:{i}" for i in range(1, 200, 2) if not str(i).startswith("1")}
        assert await cache.aclear() == len(left)
        assert await cache.aget_many(list(items)) == {}
        assert cache.get_many(list(items)) == {}  # the sync side sees the same store

    _run(scenario, cache)


def test_async_cached_tags_and_invalidate(cache: Cache) -> None:
    calls: list[int] = []

    @cache.cached(ttl=60, key="product:{pid}", tags=("products", "group:{pid}"))
    async def product(pid: int) -> int:
        calls.append(pid)
        return pid * 10

    async def scenario() -> None:
        assert [await product(i) for i in range(20)] == [i * 10 for i in range(20)]
        assert [await product(i) for i in range(20)] == [i * 10 for i in range(20)]
        assert calls == list(range(20))
        assert await product.ainvalidate(3) is True
        assert await product.ainvalidate(3) is False
        assert await cache.aget(product.key(3)) is None
        assert await cache.ainvalidate_tags("group:4") == 1
        for i in range(30):
            await cache.aset(f"item:{i}", i, tags=("items", f"mod:{i % 3}"))
        assert await cache.ainvalidate_tags("mod:1") == 10
        assert await cache.aget("item:1") is None and await cache.aget("item:0") == 0
        assert await cache.ainvalidate_tags("products") == 18  # not 3 nor 4: gone already
        assert await cache.ainvalidate_tags("items") == 20
        assert await cache.aget_many([f"item:{i}" for i in range(30)]) == {}
        assert [await product(i) for i in (3, 5)] == [30, 50]
        assert calls == [*range(20), 3, 5]

    _run(scenario, cache)


def test_async_invalidates_and_write_through(cache: Cache) -> None:
    rows = {1: "one", 2: "two"}

    async def load(user_id: int) -> str | None:
        await asyncio.sleep(0)
        return rows.get(user_id)

    async def store(user_id: int, value: str) -> None:
        rows[user_id] = value

    async def remove(user_id: int) -> None:
        rows.pop(user_id, None)

    users = cache.write_through(key="user:{}", load=load, store=store, delete=remove)

    @cache.invalidates(key="user:{user_id}")
    async def rename_in_the_source(user_id: int, name: str) -> None:
        rows[user_id] = name

    async def scenario() -> None:
        assert await users.aget(1) == "one"
        rows[1] = "changed behind the cache's back"
        assert await users.aget(1) == "one"  # cached
        await users.aset(1, "uno")
        assert rows[1] == "uno" and await users.aget(1) == "uno"
        await rename_in_the_source(1, "eins")
        assert await cache.aget("user:1") is None
        assert await users.aget(1) == "eins"
        assert await users.aget(2) == "two"
        assert await users.adelete(2) is True
        assert 2 not in rows and await cache.aget("user:2") is None

    _run(scenario, cache)


def test_async_lock_excludes_expires_and_tells_its_holder(cache: Cache, url: str) -> None:
    other = _other(cache, url)

    async def scenario() -> None:
        async with cache.lock("order:1", ttl=10, timeout=1):
            assert not await other.lock("order:1", ttl=10).aacquire(blocking=False)
        lock = other.lock("order:1", ttl=10)
        assert await lock.aacquire(blocking=False)
        assert await lock.aowned()
        assert await lock.aextend(5)
        await lock.arelease()
        with pytest.raises(LockError):
            await lock.arelease()

        short = cache.lock("order:2", ttl=0.3)
        assert await short.aacquire(blocking=False)
        # the other owner waits until the short lock's key expires in Redis, then holds it
        taker = other.lock("order:2", ttl=10, timeout=10)
        assert await taker.aacquire()
        with pytest.raises(LockNotOwnedError):
            await short.aextend(5)
        with pytest.raises(LockNotOwnedError):
            await short.arelease()
        assert await taker.aowned()
        await taker.arelease()

    _run(scenario, cache, other)
    other.close()


def _data_ports(topology: ClusterServers | SentinelServers) -> list[int]:
    nodes = topology.nodes if isinstance(topology, ClusterServers) else topology.servers
    return [node.port for node in nodes]


def _blocked_clients(ports: list[int]) -> int:
    """Clients blocked in a command (BLMOVE here) on these servers, by their own count."""
    total = 0
    for port in ports:
        with redis.Redis(port=port) as client:
            total += int(client.info("clients")["blocked_clients"])
    return total


def test_async_lock_waiters_of_other_caches_are_woken_with_the_value(
    cache: Cache, url: str, topology: ClusterServers | SentinelServers
) -> None:
    """get_or_set(lock=True) from three other caches while this one computes: each waits
    blocked in Redis (on the entry's wake-up list), and the leader's finish hands all of
    them its value; the function runs once."""
    others = [_other(cache, url) for _ in range(3)]
    ports = _data_ports(topology)
    calls: list[int] = []

    async def scenario() -> None:
        started, release = asyncio.Event(), asyncio.Event()

        async def load() -> str:
            calls.append(1)
            started.set()
            await release.wait()
            return "computed"

        async def lead() -> Any:
            return await cache.aget_or_set("hot", load, ttl=60, lock=True)

        leader = asyncio.create_task(lead())
        await asyncio.wait_for(started.wait(), 10)
        already = _blocked_clients(ports)
        waiters = [
            asyncio.create_task(other.aget_or_set("hot", load, ttl=60, lock=True))
            for other in others
        ]
        deadline = time.monotonic() + 10
        while _blocked_clients(ports) < already + len(others):  # the servers' own count
            assert time.monotonic() < deadline, "the waiters never blocked in Redis"
            await asyncio.sleep(0.01)
        release.set()
        results = await asyncio.wait_for(asyncio.gather(leader, *waiters), 20)
        assert results == ["computed"] * 4
        assert calls == [1]
        assert [await other.aget("hot") for other in others] == ["computed"] * 3

    _run(scenario, cache, *others)
    for other in others:
        other.close()


def test_async_stale_while_revalidate_and_early_refresh(cache: Cache) -> None:
    calls: list[int] = []

    @cache.cached(ttl=60, stale_ttl=30, early_refresh=True)
    async def value() -> int:
        calls.append(1)
        return len(calls)

    async def scenario() -> None:
        assert await value() == 1
        assert await value() == 1  # a hit through the entry's metadata (logical expiry)
        assert len(calls) == 1
        assert await value.arefresh() == 2
        assert await value() == 2
        assert len(calls) == 2

    _run(scenario, cache)


def test_async_stale_value_served_while_one_refresh_runs(cache: Cache, url: str) -> None:
    other = _other(cache, url)
    calls: list[int] = []
    refreshing, finish = asyncio.Event(), asyncio.Event()  # bound to the loop on first use

    async def compute() -> int:
        calls.append(1)
        if len(calls) == 2:
            refreshing.set()
            await finish.wait()
        return len(calls)

    first = cache.cached(ttl=0.2, stale_ttl=30, key="v")(compute)
    second = other.cached(ttl=0.2, stale_ttl=30, key="v")(compute)

    async def scenario() -> None:
        assert await first() == 1
        await asyncio.sleep(0.3)  # waiting for the clock: past its ttl, inside stale_ttl
        # stale, and a background refresh starts (a bounded wait: a blocking recompute
        # would wait for `finish` itself)
        assert await asyncio.wait_for(first(), 10) == 1
        await asyncio.wait_for(refreshing.wait(), 10)
        assert await asyncio.wait_for(second(), 10) == 1  # another process: stale too
        assert await asyncio.wait_for(first(), 10) == 1
        assert len(calls) == 2  # one refresh, whoever read the stale entry meanwhile
        finish.set()
        deadline = time.monotonic() + 10
        while (got := await second()) == 1:  # the store lands just after the refresh returned
            assert time.monotonic() < deadline, calls
            await asyncio.sleep(0.01)
        # the refresh's value (a stale read of `other` racing its store may refresh once
        # more across processes: the lock is free again, and nothing tells it the entry
        # was just refreshed)
        assert got >= 2

    _run(scenario, cache, other)
    other.close()


def test_async_write_behind_flushes(cache: Cache) -> None:
    stored: dict[Any, Any] = {}
    batches: list[int] = []

    async def store_many(batch: dict[Any, Any]) -> None:
        batches.append(len(batch))
        stored.update(batch)

    users = cache.write_behind(key="user:{}", store_many=store_many, batch_size=20)

    async def scenario() -> None:
        for i in range(100):
            await users.aset(i, {"id": i})
        assert await users.aget(7) == {"id": 7}  # the cache is updated at once
        await users.aflush(timeout=20)
        assert stored == {i: {"id": i} for i in range(100)}
        assert batches and max(batches) <= 20
        assert await users.adead_letters() == []
        await users.aclose()

    _run(scenario, cache)


def test_async_rate_limiter(cache: Cache, url: str) -> None:
    limiter = cache.rate_limiter("api", rate="5/minute")
    other = _other(cache, url).rate_limiter("api", rate="5/minute")  # another process

    async def scenario() -> None:
        assert [(await limiter.ahit(f"user:{u}")).allowed for u in range(20)] == [True] * 20
        assert (await limiter.apeek("user:1")).remaining == 4
        assert [(await other.ahit("user:1")).allowed for _ in range(4)] == [True] * 4
        assert not (await limiter.ahit("user:1")).allowed  # counted across both
        assert await limiter.areset("user:1")
        assert (await other.ahit("user:1")).allowed

    _run(scenario, cache)


def test_django_cache_backend_async_api(url: str) -> None:
    """Django's async cache API (``aget_many``, ``aincr``, ...) through CachekitCache with
    the topology's URL (in a process of its own, as the sync twin)."""
    script = f"""
import asyncio
import django
from django.conf import settings
settings.configure(SECRET_KEY="test-only", CACHES={{"default": {{
    "BACKEND": "cachekit.integrations.django.CachekitCache",
    "LOCATION": {url!r}, "KEY_PREFIX": "dj{uuid.uuid4().hex[:8]}",
    "OPTIONS": {{"on_error": "raise"}}}}}})
django.setup()
from django.core.cache import cache

async def main():
    keys = {{f"k{{i}}": i for i in range(50)}}
    await cache.aset_many(keys, 60)
    assert await cache.aget_many(list(keys)) == keys
    assert await cache.aincr("k1", 5) == 6
    assert await cache.aadd("k2", "x") is False
    assert await cache.aadd("new", "x") is True
    assert await cache.aget("new") == "x" and await cache.ahas_key("new")
    await cache.adelete_many(list(keys)[:25])
    assert len(await cache.aget_many(list(keys))) == 25
    assert cache.get("k30") == 30  # the sync API sees the same store
    await cache.aclear()
    assert await cache.aget_many(list(keys)) == {{}}
    await cache.aclose()

asyncio.run(main())
print("ok")
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]
