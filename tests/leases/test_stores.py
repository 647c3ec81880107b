"""Which leases a cache wires (cachekit.leases.stores), asked once from the backend's
capabilities: Redis's tombstones, marks in process for any in-process store (ours or a
third party's), plain writes for a remote store that keeps no invalidations. And the
attacks: a stale write-back through each, and caches sharing one in-process store."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import pytest

from cachekit import Cache
from cachekit.backends.base import LocalState
from cachekit.backends.memory.store import MemoryBackend
from cachekit.leases.rules import LocalMarks
from cachekit.leases.stores import LocalLeases, UnguardedLeases

from backends.test_backends import RemoteStore
from backends.test_local_state import ThirdPartyStore
from conftest import unique_prefix


def test_redis_leases_are_its_tombstones(redis_url: str) -> None:
    cache = Cache(redis_url, prefix=unique_prefix())
    try:
        assert cache._leases is cache._tombstones and cache._aleases is cache._atombstones
    finally:
        cache.close()


def test_memory_leases_keep_their_marks_in_the_store_state() -> None:
    store = MemoryBackend()
    first, second = Cache(backend=store), Cache(backend=store)
    assert isinstance(first._leases, LocalLeases) and first._aleases is first._leases
    marks = store.local_state().get(LocalMarks)
    assert first._leases.marks is marks  # the tags' in-process path marks these too
    assert isinstance(second._leases, LocalLeases) and second._leases.marks is marks
    assert first.with_options(serializer="raw")._leases is first._leases


def test_a_third_party_in_process_store_gets_marks_without_local_state() -> None:
    cache = Cache(backend=ThirdPartyStore(with_state=False))
    assert isinstance(cache._leases, LocalLeases)


def test_a_remote_store_without_tombstones_stores_plainly() -> None:
    cache = Cache(backend=RemoteStore(), prefix=unique_prefix())
    assert isinstance(cache._leases, UnguardedLeases)


def _slow_load(cache: Cache) -> tuple[Any, threading.Event, threading.Event, list[int]]:
    read, release = threading.Event(), threading.Event()
    calls: list[int] = []

    @cache.cached(ttl=60)
    def load(n: int) -> int:
        calls.append(n)
        read.set()
        assert release.wait(5)
        return len(calls)

    return load, read, release, calls


def _race(
    load: Any, read: threading.Event, release: threading.Event, invalidate: Callable[[], Any]
) -> None:
    loader = threading.Thread(target=load, args=(1,))
    loader.start()
    assert read.wait(5)
    invalidate()
    release.set()
    loader.join(5)


@pytest.mark.parametrize("with_state", [True, False], ids=["local_state", "no local_state"])
def test_a_third_party_in_process_store_refuses_a_stale_write_back(with_state: bool) -> None:
    cache = Cache(backend=ThirdPartyStore(with_state=with_state))
    load, read, release, calls = _slow_load(cache)
    _race(load, read, release, lambda: load.invalidate(1))
    assert load(1) == 2 and load(1) == 2 and calls == [1, 1]  # the old load did not store


def test_an_invalidation_through_one_cache_revokes_anothers_load_over_the_store() -> None:
    store = MemoryBackend()
    loader, writer = Cache(backend=store, prefix="p"), Cache(backend=store, prefix="p")
    load, read, release, calls = _slow_load(loader)
    _race(load, read, release, lambda: writer.delete(load.key(1)))
    assert load(1) == 2 and calls == [1, 1]


def test_a_pattern_delete_through_one_cache_refuses_anothers_load() -> None:
    store = MemoryBackend()
    loader, writer = Cache(backend=store, prefix="p"), Cache(backend=store, prefix="p")
    load, read, release, calls = _slow_load(loader)
    _race(load, read, release, lambda: writer.delete_pattern("*"))
    assert load(1) == 2 and calls == [1, 1]


def test_an_async_load_over_a_third_party_store_refuses_a_stale_write_back() -> None:
    cache = Cache(backend=ThirdPartyStore(with_state=False))
    calls: list[int] = []

    async def main() -> list[int]:
        read, release = asyncio.Event(), asyncio.Event()

        @cache.cached(ttl=60)
        async def load(n: int) -> int:
            calls.append(n)
            read.set()
            await release.wait()
            return len(calls)

        task = asyncio.create_task(load(1))
        await read.wait()
        await load.ainvalidate(1)
        release.set()
        first = await task
        return [first, await load(1), await load(1)]

    assert asyncio.run(main()) == [1, 2, 2] and calls == [1, 1]


def test_local_leases_fence_revokes_without_deleting() -> None:
    store = MemoryBackend()
    leases = LocalLeases(store, LocalState().get(LocalMarks))
    store.set("k", b"v", None)
    since = leases.marks.clock()
    leases.fence(["k"])
    assert store.get("k") == b"v"  # the entry stays
    assert leases.store("k", b"older", None, since) is False  # the older load is refused
    assert leases.store("k", b"newer", None, leases.marks.clock()) is True
