from __future__ import annotations

import asyncio
import threading

from cachekit import Cache
from cachekit._sentinel import MISSING
from cachekit.backends import MemoryBackend


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_lru_eviction_keeps_recently_used() -> None:
    store = MemoryBackend(max_entries=3)
    for key in "abc":
        store.set(key, key, None)
    store.get("a")  # a is now the most recently used
    store.set("d", "d", None)
    assert store.get("b") is MISSING
    assert [store.get(k) for k in "acd"] == ["a", "c", "d"]
    assert store.evictions == 1 and len(store) == 3


def test_expiry_lazy_and_periodic() -> None:
    clock = Clock()
    store = MemoryBackend(max_entries=10_000, sweep_interval=1.0, clock=clock)
    for i in range(1000):
        store.set(f"k{i}", i, 5)
    store.set("keep", 1, None)
    clock.now += 10
    assert store.get("k1") is MISSING  # lazy: gone when read
    assert len(store) == 1000
    store.set("trigger", 1, None)  # periodic: the next write sweeps the expired ones
    assert len(store) == 2
    assert store.ttl("keep") is None and store.get("keep") == 1


def test_sweep_survives_overwrites() -> None:
    clock = Clock()
    store = MemoryBackend(sweep_interval=0.0, clock=clock)
    for _ in range(1000):
        store.set("same", 1, 5)
    assert len(store._expiries) < 200  # stale heap items are compacted
    store.set("same", 2, 100)
    clock.now += 10
    store.set("other", 1, None)
    assert store.get("same") == 2  # the old expiry must not remove the new entry


def test_threads_hammering_one_store() -> None:
    cache = Cache(max_entries=500)
    errors: list[BaseException] = []
    start = threading.Event()

    def worker(n: int) -> None:
        start.wait()
        try:
            for i in range(2000):
                key = f"k{(i * 7 + n) % 800}"
                cache.set(key, i, ttl=60)
                cache.get(key)
                if i % 10 == 0:
                    cache.delete(key)
                cache.incr(f"counter{n}")
        except BaseException as exc:  # pragma: no cover - the assertion reports it
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    start.set()
    for thread in threads:
        thread.join()
    assert errors == []
    assert cache.stats()["entries"] <= 500


def test_incr_is_atomic_across_threads() -> None:
    cache = Cache(max_entries=10)
    start = threading.Event()

    def worker() -> None:
        start.wait()
        for _ in range(1000):
            cache.incr("n")

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    start.set()
    for thread in threads:
        thread.join()
    assert cache.get("n") == 8000


def test_tasks_share_the_store() -> None:
    cache = Cache()

    async def scenario() -> None:
        await asyncio.gather(*(cache.aset(f"k{i}", i) for i in range(100)))
        values = await asyncio.gather(*(cache.aget(f"k{i}") for i in range(100)))
        assert values == list(range(100))

    asyncio.run(scenario())


def test_memory_stores_objects_by_default() -> None:
    cache = Cache()
    value = {"a": [1]}
    cache.set("k", value)
    assert cache.get("k") is value  # like lru_cache: no copy, no serializer
    assert cache.serializer is None
    assert Cache(serializer="json").serializer is not None


def test_fast_path_keeps_equal_but_different_arguments_apart() -> None:
    cache = Cache()
    calls: list[object] = []

    @cache.cached(ttl=60)
    def ident(x: object) -> object:
        calls.append(x)
        return x

    for _ in range(2):
        results = [ident(1), ident(True), ident(1.0), ident("1")]
    assert [type(r) for r in results] == [int, bool, float, str]
    assert len(calls) == 4
    for arg in range(2000):  # past the key memo's bound: still correct
        assert ident(arg) == arg
    assert ident(1) == 1 and ident(True) is True
