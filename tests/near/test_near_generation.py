"""invalidate_all() and the near cache: a bump reaches other near processes through their
invalidation link (the generation key is tracked), not only at their next poll."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from conftest import unique_prefix

from cachekit import Cache
from cachekit.near import NearBackend
from cachekit.near._layer import NearLayer
from cachekit.testing.servers import ClusterServers, RedisServer


def layer_of(cache: Cache) -> NearLayer:
    backend = cache._backend
    assert isinstance(backend, NearBackend)
    return backend.layer


def caught_up(*caches: Cache) -> None:
    for cache in caches:
        assert layer_of(cache).link.caught_up(5.0), "the invalidation link did not answer"


@pytest.fixture
def pair(redis_server: RedisServer) -> Iterator[tuple[Cache, Cache]]:
    prefix = unique_prefix()
    # a poll interval no test lasts: only the link can tell b of the bump
    a = Cache(redis_server.url, prefix=prefix, near=True, generation_poll=3600)
    b = Cache(redis_server.url, prefix=prefix, near=True, generation_poll=3600)
    yield a, b
    a.clear()
    a.close()
    b.close()


def test_a_near_process_hears_the_bump_through_its_link(pair: tuple[Cache, Cache]) -> None:
    a, b = pair
    calls: list[int] = []

    @b.cached(ttl=60)
    def one(x: int) -> int:
        calls.append(x)
        return x

    a.set("k", "old")
    caught_up(b)
    assert b.get("k") == "old" and one(1) == 1
    caught_up(b)
    assert b.get("k") == "old" and one(1) == 1 and calls == [1]  # L1 hits
    flushes = layer_of(b).store.flushes
    assert a.invalidate_all()
    caught_up(b)
    assert layer_of(b).store.flushes > flushes  # the L1 of the old generation: dropped
    assert b.get("k") is None and b.generation == 1
    assert one(1) == 1 and calls == [1, 1]


async def test_async_near_process_hears_the_bump(pair: tuple[Cache, Cache]) -> None:
    a, b = pair
    await a.aset("k", "old")
    caught_up(b)
    assert await b.aget("k") == "old"
    await a.ainvalidate_all()
    caught_up(b)
    assert await b.aget("k") is None
    await b.aset("k", "new")
    assert await a.aget("k") == "new"


def test_the_near_link_tracks_every_generation(redis_server: RedisServer) -> None:
    prefix = unique_prefix()
    a = Cache(redis_server.url, prefix=prefix, near=True)
    b = Cache(redis_server.url, prefix=prefix, near=True, generation_poll=0)
    try:
        a.invalidate_all()
        a.set("k", "v1")
        caught_up(b)
        assert b.get("k") == "v1"
        caught_up(b)
        assert b.get("k") == "v1"  # served by the L1 at generation 1 ...
        a.set("k", "v2")
        caught_up(b)
        assert b.get("k") == "v2"  # ... and invalidated there
    finally:
        a.clear()
        a.close()
        b.close()


def test_near_on_a_cluster_hears_the_bump(redis_cluster: ClusterServers) -> None:
    """The generation key lives on one primary: that primary's link tells of the bump."""
    prefix = unique_prefix()
    a = Cache(redis_cluster.url, prefix=prefix, near=True, generation_poll=3600)
    b = Cache(redis_cluster.url, prefix=prefix, near=True, generation_poll=3600)
    try:
        a.set("k", "old")
        caught_up(b)
        assert b.get("k") == "old"
        caught_up(b)
        assert b.get("k") == "old"
        assert a.invalidate_all()
        caught_up(b)
        assert b.get("k") is None and b.generation == 1
    finally:
        a.clear()
        a.close()
        b.close()
