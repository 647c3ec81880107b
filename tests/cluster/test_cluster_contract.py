"""The public conformance suite, unchanged, on a 3-primary Redis Cluster and behind
Sentinel: through URLs and the user's own redis-py clients (sync: the suite; asyncio:
the same calls in one event loop, as the user owns and closes that client)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.asyncio.sentinel import Sentinel as AsyncSentinel
from redis.cluster import ClusterNode, RedisCluster
from redis.sentinel import Sentinel

from cachekit import Cache
from cachekit.testing import CacheContract, closing_caches
from cachekit.testing.servers import ClusterServers, SentinelServers

MakeCache = Callable[[str], Cache]


class TestClusterURL(CacheContract):
    @pytest.fixture
    def make_cache(self, redis_cluster: ClusterServers) -> Iterator[MakeCache]:
        yield from closing_caches(lambda prefix: Cache(redis_cluster.url, prefix=prefix))


class TestClusterClient(CacheContract):
    """``Cache(client=RedisCluster(...))``: the user's client for sync calls."""

    @pytest.fixture
    def make_cache(self, redis_cluster: ClusterServers) -> Iterator[MakeCache]:
        client = RedisCluster(startup_nodes=[ClusterNode("127.0.0.1", redis_cluster.ports[0])])
        yield from closing_caches(lambda prefix: Cache(client=client, prefix=prefix))
        client.close()


class TestSentinelURL(CacheContract):
    @pytest.fixture
    def make_cache(self, redis_sentinel: SentinelServers) -> Iterator[MakeCache]:
        yield from closing_caches(lambda prefix: Cache(redis_sentinel.url, prefix=prefix))


class TestSentinelClient(CacheContract):
    """``Cache(client=Sentinel(...).master_for(...))``."""

    @pytest.fixture
    def make_cache(self, redis_sentinel: SentinelServers) -> Iterator[MakeCache]:
        sentinel = Sentinel([("127.0.0.1", s.port) for s in redis_sentinel.sentinels])
        client = sentinel.master_for(redis_sentinel.service)
        yield from closing_caches(lambda prefix: Cache(client=client, prefix=prefix))
        client.close()


async def _given_async_client_scenario(client: Any) -> None:
    """What the contract's async tests check, with the user's asyncio client, closed by
    its owner inside its event loop; the sync side (a twin) sees the same store."""
    cache = Cache(client=client, prefix=f"a{uuid.uuid4().hex[:10]}")
    try:
        assert await cache.aset_many({f"k{i}": i for i in range(50)}, ttl=30)
        assert await cache.aget_many([f"k{i}" for i in range(50)] + ["nope"]) == {
            f"k{i}": i for i in range(50)
        }
        assert cache.get("k7") == 7  # the sync twin: same servers
        cache.set("sync", "side")
        assert await cache.aget("sync") == "side"
        assert await cache.aincr("n", 2, ttl=30) == 2
        assert await cache.adelete_pattern("k1*") == 11
        assert await cache.adelete_many(["k2", "k3", "k10"]) == 2

        @cache.cached(ttl=30)
        async def double(x: int) -> int:
            return 2 * x

        assert await double(4) == 8
        assert await cache.aget(double.key(4)) == 8
        assert await cache.aclear() >= 40
        assert cache.get("k7") is None
    finally:
        cache.close()
        await cache.aclose()
        await client.aclose()


async def test_async_cluster_client(redis_cluster: ClusterServers) -> None:
    """``Cache(client=redis.asyncio.RedisCluster(...))``."""
    await _given_async_client_scenario(
        AsyncRedisCluster(host="127.0.0.1", port=redis_cluster.ports[1])
    )


async def test_async_sentinel_client(redis_sentinel: SentinelServers) -> None:
    """``Cache(client=redis.asyncio.sentinel.Sentinel(...).master_for(...))``."""
    sentinel = AsyncSentinel([("127.0.0.1", s.port) for s in redis_sentinel.sentinels])
    client = sentinel.master_for(redis_sentinel.service)
    try:
        await _given_async_client_scenario(client)
    finally:
        for s in sentinel.sentinels:
            await s.aclose()
