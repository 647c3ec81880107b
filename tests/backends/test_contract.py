"""The public conformance suite, run on each built-in backend."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import fakeredis
import pytest

from cachekit import Cache
from cachekit.backends import MemoryBackend
from cachekit.testing import CacheContract, closing_caches
from cachekit.testing.servers import RedisServer


class TestMemory(CacheContract):
    @pytest.fixture
    def make_cache(self) -> Callable[[str], Cache]:
        store = MemoryBackend()
        return lambda prefix: Cache(backend=store, prefix=prefix)


class TestMemorySerialized(CacheContract):
    """The memory backend storing encoded bytes (a serializer was asked for)."""

    @pytest.fixture
    def make_cache(self) -> Callable[[str], Cache]:
        store = MemoryBackend()
        return lambda prefix: Cache(backend=store, prefix=prefix, serializer="orjson")


class TestRedis(CacheContract):
    @pytest.fixture
    def make_cache(self, redis_server: RedisServer) -> Iterator[Callable[[str], Cache]]:
        yield from closing_caches(lambda prefix: Cache(redis_server.url, prefix=prefix))


class TestFakeRedis(CacheContract):
    @pytest.fixture
    def make_cache(self) -> Callable[[str], Cache]:
        client = fakeredis.FakeRedis()
        return lambda prefix: Cache(client=client, prefix=prefix)
