"""Tombstones: on Redis an invalidation lives in the entry's own key (see
cachekit.leases.rules). A load that read nothing stores with SET NX, one that read a
tombstone by a compare-and-set over it; every reader takes a tombstone for a miss, and no
value a user stores is ever taken for one. Real redis-server (and a cluster), sync and
async."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from cachekit import MISSING, Cache
from cachekit.leases.rules import TOMBSTONE_HEAD, is_tombstone
from cachekit.testing.servers import ClusterServers, RedisServer

from conftest import unique_prefix


@pytest.fixture(params=["redis", "cluster"])
def url(request: pytest.FixtureRequest) -> str:
    servers: RedisServer | ClusterServers = request.getfixturevalue(
        "redis_server" if request.param == "redis" else "redis_cluster"
    )
    return servers.url


@pytest.fixture
def cache(url: str) -> Iterator[Cache]:
    cache = Cache(url, prefix=unique_prefix(), on_error="raise")
    yield cache
    cache.close()


def _raw(cache: Cache, key: str) -> Any:
    return cache.client.get(cache.make_key(key))


def test_a_delete_leaves_a_tombstone_that_every_reader_takes_for_a_miss(cache: Cache) -> None:
    cache.set("k", {"v": 1}, ttl=60)
    assert cache.delete("k") is True
    assert is_tombstone(_raw(cache, "k"))  # the invalidation is kept in the key itself
    assert cache.get("k", "none") == "none"
    assert cache.get_many(["k"]) == {}
    assert cache.exists("k") is False
    assert cache.ttl("k", MISSING) is MISSING
    assert cache.expire("k", 30) is False
    assert cache.expire("k", None) is False
    assert is_tombstone(_raw(cache, "k"))  # expire did not revive (or prolong) it
    assert cache.delete("k") is False  # "existed?": a tombstone is nothing
    cache.set("j", 1, ttl=60)
    assert cache.delete_many(["k", "j", "absent"]) == 1
    assert cache.add("k", "added", ttl=60) is True  # add after delete stores
    assert cache.get("k") == "added"
    assert cache.add("k", "again", ttl=60) is False
    cache.delete("k")
    assert cache.incr("k", 5) == 5  # a counter starts from 0 over a tombstone
    cache.delete("k")
    cache.delete("j")
    full = cache.make_key("k")
    assert cache.clear() == 0  # tombstones are no entries (and stay: they guard loads)
    assert is_tombstone(cache.client.get(full))


async def test_async_readers_take_a_tombstone_for_a_miss(url: str) -> None:
    cache = Cache(url, prefix=unique_prefix(), on_error="raise")
    try:
        await cache.aset("k", "v", ttl=60)
        assert await cache.adelete("k") is True
        assert await cache.aget("k", "none") == "none"
        assert await cache.aget_many(["k"]) == {}
        assert await cache.aexists("k") is False
        assert await cache.attl("k", MISSING) is MISSING
        assert await cache.adelete("k") is False
        assert await cache.aadd("k", "added", ttl=60) is True
        assert await cache.aget("k") == "added"
    finally:
        await cache.aclose()


def test_invalidation_between_the_read_and_the_store_is_not_stored(cache: Cache) -> None:
    db = {"row": "old"}
    calls = 0

    @cache.cached(ttl=60)
    def load() -> str:
        nonlocal calls
        calls += 1
        value = db["row"]
        if calls == 1:  # the writer, while this load runs: after its read of the source
            db["row"] = "new"
            load.invalidate()  # type: ignore[attr-defined]
        return value

    assert load() == "old"  # its caller gets it, but it is not kept
    assert is_tombstone(_raw(cache, load.key()))  # type: ignore[attr-defined]
    assert load() == "new"  # read a tombstone: stores over it (compare-and-set)
    assert load() == "new" and calls == 2


def test_invalidation_before_the_read_lets_the_load_store(cache: Cache) -> None:
    calls = 0

    @cache.cached(ttl=60)
    def load() -> int:
        nonlocal calls
        calls += 1
        return calls

    assert load() == 1
    load.invalidate()  # type: ignore[attr-defined]
    load.invalidate()  # two in a row: the second tombstone is the one read
    assert load() == 2
    assert load() == 2 and calls == 2  # stored over the tombstone


def test_two_invalidations_during_a_load_are_not_stored(cache: Cache) -> None:
    calls = 0

    @cache.cached(ttl=60)
    def load() -> int:
        nonlocal calls
        calls += 1
        if calls == 2:  # this load read the first tombstone; two more come meanwhile
            load.invalidate()  # type: ignore[attr-defined]
            load.invalidate()  # type: ignore[attr-defined]
        return calls

    load()
    load.invalidate()  # type: ignore[attr-defined]
    assert load() == 2  # read a tombstone, but not the one the key holds at its store
    assert load() == 3 and load() == 3


def test_a_concurrent_second_loader_keeps_its_value(cache: Cache) -> None:
    """A second load that began and stored while the first ran: the first's store is
    refused (the key is no longer what its read found), whether the first read nothing
    (SET NX) or a tombstone (compare-and-set)."""
    for invalidated_first in (False, True):
        key = f"k{invalidated_first}"
        if invalidated_first:
            cache.set(key, "older", ttl=60)
            cache.delete(key)
        inside, stored = threading.Event(), threading.Event()
        values = iter(["first", "second"])

        def load() -> str:
            value = next(values)
            if value == "first":
                inside.set()
                assert stored.wait(10)
            return value

        def second() -> None:
            assert inside.wait(10)
            assert cache.get_or_set(key, load, ttl=60) == "second"
            stored.set()

        other = threading.Thread(target=second)
        other.start()
        assert cache.get_or_set(key, load, ttl=60) == "first"
        other.join()
        assert cache.get(key) == "second"


@pytest.mark.parametrize("serializer", ["raw", "pickle", None])
def test_values_that_look_like_tombstones_are_values(url: str, serializer: str | None) -> None:
    options: dict[str, Any] = {"serializer": serializer} if serializer else {}
    if serializer == "pickle":
        options["secret"] = "s3cret"
    cache = Cache(url, prefix=unique_prefix(), on_error="raise", **options)
    lookalikes: list[Any] = [TOMBSTONE_HEAD, TOMBSTONE_HEAD + uuid.uuid4().hex.encode(),
                             b"\x00", b""]  # fmt: skip
    if serializer == "pickle":
        lookalikes += [TOMBSTONE_HEAD.decode(), ("\x00ck:tombstone:", 1)]
    if serializer is None:
        lookalikes = [TOMBSTONE_HEAD.decode(), "\x00ck:tombstone:" + "0" * 32, "\x00"]
    try:
        for i, value in enumerate(lookalikes):
            assert cache.set(f"v{i}", value, ttl=60)
            assert not is_tombstone(_raw(cache, f"v{i}"))
            assert cache.get(f"v{i}", MISSING) == value
            assert cache.exists(f"v{i}") and cache.ttl(f"v{i}") is not None
            assert cache.get_many([f"v{i}"]) == {f"v{i}": value}
            assert cache.delete(f"v{i}") is True

            @cache.cached(ttl=60, name=f"f{i}")
            def f(value: Any = value) -> Any:
                return value

            assert f() == value and f() == value
    finally:
        cache.close()


@pytest.mark.parametrize("options", [{}, {"lock": True}], ids=["plain", "lock"])
def test_a_load_stores_over_what_it_could_not_serve(cache: Cache, options: Any) -> None:
    """An entry the read found but did not serve (past its logical expiry, kept for
    stale_if_error; corrupt) is replaced by the load (SET NX alone would keep it)."""
    calls = 0

    @cache.cached(ttl=0.05, stale_if_error=60, **options)
    def load() -> int:
        nonlocal calls
        calls += 1
        return calls

    assert load() == 1
    deadline = time.monotonic() + 10
    while load() == 1:  # until it is past its logical expiry (time passing is the point)
        assert time.monotonic() < deadline
    assert calls == 2 and cache.get(load.key()) == 2  # type: ignore[attr-defined]
    cache.client.set(cache.make_key("bad"), b"\x01{corrupt", px=60_000)
    assert cache.get_or_set("bad", lambda: "fresh", ttl=60) == "fresh"
    assert cache.get("bad") == "fresh"


def test_a_lock_holder_stores_over_the_tombstone_it_found(cache: Cache) -> None:
    calls = 0

    @cache.cached(ttl=60, lock=True)
    def load() -> int:
        nonlocal calls
        calls += 1
        if calls == 2:  # invalidated while this holder computes: not stored
            load.invalidate()  # type: ignore[attr-defined]
        return calls

    load()
    load.invalidate()  # type: ignore[attr-defined]
    assert load() == 2  # held the lock over a tombstone; a new one came meanwhile
    assert load() == 3 and load() == 3  # over the tombstone it found: stored


def test_a_tombstone_in_the_near_cache_is_a_miss(redis_server: RedisServer) -> None:
    prefix = unique_prefix()
    a = Cache(redis_server.url, prefix=prefix, near=True)
    b = Cache(redis_server.url, prefix=prefix, near=True)
    try:
        a.set("k", "v", ttl=60)
        assert b.get("k") == "v"
        b.delete("k")
        for _ in range(3):  # read through the L1 and from it
            assert a.get("k", "none") == "none"
            assert b.get("k", "none") == "none"
        assert b.stats()["errors"] == 0 and a.stats()["errors"] == 0
        calls = 0

        @a.cached(ttl=60, name="f")
        def f() -> int:
            nonlocal calls
            calls += 1
            return calls

        assert f() == 1
        f.invalidate()  # type: ignore[attr-defined]
        assert f() == 2 and f() == 2
    finally:
        a.close()
        b.close()


async def test_async_loads_and_tombstones(url: str) -> None:
    cache = Cache(url, prefix=unique_prefix(), on_error="raise")
    calls = 0

    @cache.cached(ttl=60)
    async def load() -> int:
        nonlocal calls
        calls += 1
        if calls == 1:
            await load.ainvalidate()  # type: ignore[attr-defined]
        await asyncio.sleep(0)
        return calls

    try:
        assert await load() == 1  # invalidated between its read and its store
        assert await load() == 2  # read the tombstone: stores over it
        assert await load() == 2
        await load.ainvalidate()  # type: ignore[attr-defined]
        await load.ainvalidate()  # type: ignore[attr-defined]
        assert await load() == 3 and await load() == 3
    finally:
        await cache.aclose()


def test_foreign_writes_to_the_raw_key_are_never_served(cache: Cache) -> None:
    """Someone writes a tombstone's bytes into a key with redis-py: a miss (an
    invalidation), never a value."""
    full = cache.make_key("k")
    cache.client.set(full, TOMBSTONE_HEAD + b"forged", px=60_000)
    assert cache.get("k", "none") == "none" and not cache.exists("k")
    assert isinstance(cache.client, (redis.Redis, redis.RedisCluster))
