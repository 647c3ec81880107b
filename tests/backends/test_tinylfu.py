"""W-TinyLFU eviction on the memory backend (cachekit.backends.memory.tinylfu)."""

from __future__ import annotations

import random
import sys
import threading
from collections import OrderedDict
from collections.abc import Callable

import pytest

from cachekit import Cache, ConfigurationError
from cachekit.core.sentinel import MISSING
from cachekit.backends import MemoryBackend
from cachekit.backends.memory.tinylfu import FrequencySketch, TinyLFUEntries, WTinyLFU
from cachekit.testing import CacheContract


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def entries_of(store: MemoryBackend) -> TinyLFUEntries:
    data = store._data
    assert isinstance(data, TinyLFUEntries)
    return data


def assert_in_step(store: MemoryBackend) -> None:
    """The policy tracks exactly the stored keys, each in one segment, within capacity."""
    data = entries_of(store)
    tracked = data.keys_in_policy()
    assert len(tracked) == len(set(tracked)), "a key in two segments"
    assert set(tracked) == set(data)
    assert len(data) <= store.max_entries
    policy = data.policy
    assert len(policy.window) <= policy.window_max


# -- the conformance suite ---------------------------------------------------------------
class TestMemoryTinyLFU(CacheContract):
    @pytest.fixture
    def make_cache(self) -> Callable[[str], Cache]:
        store = MemoryBackend(eviction="tinylfu")
        return lambda prefix: Cache(backend=store, prefix=prefix)


class TestMemoryTinyLFUSerialized(CacheContract):
    @pytest.fixture
    def make_cache(self) -> Callable[[str], Cache]:
        store = MemoryBackend(eviction="tinylfu")
        return lambda prefix: Cache(backend=store, prefix=prefix, serializer="orjson")


# -- selection ---------------------------------------------------------------------------
def test_selected_by_url_argument_and_env() -> None:
    assert isinstance(Cache("memory://?eviction=tinylfu")._backend._data, TinyLFUEntries)
    assert isinstance(Cache(eviction="tinylfu")._backend._data, TinyLFUEntries)
    env_cache = Cache.from_env({"CACHEKIT_EVICTION": "tinylfu", "CACHEKIT_MAX_ENTRIES": "50"})
    assert isinstance(env_cache._backend._data, TinyLFUEntries)
    assert env_cache.stats()["eviction"] == "tinylfu"
    assert env_cache.stats()["max_entries"] == 50


def test_default_stays_lru() -> None:
    cache = Cache()
    assert type(cache._backend._data) is OrderedDict
    assert cache.stats()["eviction"] == "lru"


def test_bad_eviction_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="eviction"):
        Cache("memory://?eviction=lfu")
    with pytest.raises(ConfigurationError, match="eviction"):
        Cache(eviction="random")
    with pytest.raises(ValueError, match="eviction"):
        MemoryBackend(eviction="fifo")


# -- the sketch --------------------------------------------------------------------------
def test_sketch_estimates_and_saturates() -> None:
    sketch = FrequencySketch(1000)
    for _ in range(5):
        sketch.increment("hot")
    sketch.increment("warm", 2)
    assert sketch.estimate("hot") == 5
    assert sketch.estimate("warm") == 2
    assert sketch.estimate("never") == 0
    for _ in range(40):
        sketch.increment("hot")
    assert sketch.estimate("hot") == 15  # 4-bit counters


def test_sketch_rarely_overestimates_cold_keys() -> None:
    sketch = FrequencySketch(1000)
    for i in range(1000):
        sketch.increment(f"seen{i}")
    overestimated = sum(sketch.estimate(f"unseen{i}") > 0 for i in range(1000))
    assert overestimated < 50  # count-min collisions over 4 rows of 4096 counters


def test_sketch_ages_by_halving() -> None:
    # int keys: their hash is fixed, so no run can draw a collision (str hashes are
    # randomised per process, and a rare four-way collision made this test flaky)
    sketch = FrequencySketch(100, sample_size=100)
    a, b = 10_001, 10_002
    for _ in range(12):
        sketch.increment(a)
    for i in range(87):
        sketch.increment(i)
    assert sketch.resets == 0 and sketch.estimate(a) == 12
    sketch.increment(b)  # the 100th increment: every counter halves
    assert sketch.resets == 1
    assert sketch.estimate(a) == 6
    assert sketch.estimate(b) == 0  # 1 // 2
    assert sketch.additions == 50


def test_sketch_doorkeeper_absorbs_first_occurrence() -> None:
    sketch = FrequencySketch(1000, doorkeeper=True)
    sketch.increment("once")
    assert sketch.estimate("once") == 1  # the doorkeeper's bit
    assert sketch.additions == 0  # the counters were left alone
    sketch.increment("once")
    sketch.increment("once")
    assert sketch.estimate("once") == 3
    sketch.age()
    assert sketch.estimate("once") == 1  # counters 2 -> 1, the doorkeeper forgotten


# -- the policy --------------------------------------------------------------------------
def test_policy_admits_the_more_frequent_key() -> None:
    policy: WTinyLFU[str] = WTinyLFU(100)
    for i in range(100):
        policy.insert(f"k{i}")
    assert len(policy) == 100 and len(policy.window) == policy.window_max == 1
    policy.access("k98", 5)  # in probation: moves to protected
    assert "k98" in policy.protected
    # k99 leaves the window for a newcomer: no more frequent than k0, it is rejected
    policy.insert("new")
    assert policy.evict() == "k99"
    # a newcomer read often while in the window beats probation's LRU key (k0)
    policy.access("new", 3)
    policy.insert("newer")
    assert policy.evict() == "k0"
    assert "new" in policy.probation
    # a one-hit newcomer loses against a key read before
    policy.access("k1")
    policy.insert("newest")
    assert policy.evict() == "newer"
    assert len(policy) == 100


def test_policy_tiny_capacity() -> None:
    policy: WTinyLFU[str] = WTinyLFU(1)
    policy.insert("a")
    policy.insert("b")
    assert policy.evict() == "a"
    assert list(policy.window) == ["b"] and len(policy) == 1
    policy.remove("b")
    assert len(policy) == 0
    with pytest.raises(KeyError):
        policy.evict()


def test_entries_refuse_mutators_that_would_bypass_the_policy() -> None:
    data = TinyLFUEntries(10, threading.Lock())
    with pytest.raises(TypeError):
        data.update({"a": (1, 1.0)})
    with pytest.raises(TypeError):
        data.setdefault("a", (1, 1.0))


# -- the backend -------------------------------------------------------------------------
def test_scan_resistance_where_lru_loses_the_hot_set() -> None:
    def hot_hit_ratio(eviction: str) -> float:
        store = MemoryBackend(max_entries=200, eviction=eviction)
        hot = [f"hot{i}" for i in range(100)]
        hits = lookups = 0
        scanned = 0
        for round_ in range(30):
            for key in hot:  # a working set that fits, read every round...
                hit = store.get(key) is not MISSING
                if not hit:
                    store.set(key, key, None)
                elif round_ >= 5:
                    hits += 1
                lookups += round_ >= 5
            for _ in range(500):  # ...between which a scan of one-hit wonders passes
                key = f"scan{scanned}"
                scanned += 1
                if store.get(key) is MISSING:
                    store.set(key, key, None)
        if eviction == "tinylfu":
            assert_in_step(store)
        return hits / lookups

    assert hot_hit_ratio("lru") == 0.0
    assert hot_hit_ratio("tinylfu") > 0.95


def test_hits_through_the_inlined_paths_are_counted() -> None:
    """@cached and cache.get on memory read the entry dict directly; their hits must reach
    the sketch, else a hot function result would lose every contest."""
    cache = Cache(eviction="tinylfu", max_entries=50)
    data = entries_of(cache._backend)

    @cache.cached
    def double(x: int) -> int:
        return x * 2

    double(1)
    for _ in range(9):
        assert double(1) == 2
    cache.set("plain", 1)
    for _ in range(4):
        assert cache.get("plain") == 1
    with cache._backend._lock:
        data._drain()
    full_key = cache.make_key(double.key(1))  # type: ignore[attr-defined]
    assert data.policy.sketch.estimate(full_key) == 10  # the write, then 9 hits
    assert data.policy.sketch.estimate(cache.make_key("plain")) == 5
    assert cache.stats()["hits"] == 13


async def test_async_hits_are_counted() -> None:
    cache = Cache(eviction="tinylfu", max_entries=50)
    data = entries_of(cache._backend)

    @cache.cached
    async def triple(x: int) -> int:
        return x * 3

    for _ in range(4):
        assert await triple(2) == 6
    with cache._backend._lock:
        data._drain()
    full_key = cache.make_key(triple.key(2))  # type: ignore[attr-defined]
    assert data.policy.sketch.estimate(full_key) == 4


def test_read_buffer_drains_without_writes() -> None:
    store = MemoryBackend(max_entries=100, eviction="tinylfu")
    store.set("k", 1, None)
    for _ in range(200):
        store.get("k")
    data = entries_of(store)
    assert len(data._reads) < 64  # a reader drained it: the buffer does not grow
    assert data.policy.sketch.estimate("k") >= 15 - 1  # saturated (minus a pending read)


@pytest.mark.parametrize("max_entries", [1, 2, 7, 100, 300])
def test_bounded_and_in_step_under_every_operation(max_entries: int) -> None:
    clock = Clock()
    store = MemoryBackend(max_entries, eviction="tinylfu", sweep_interval=0.5, clock=clock)
    rng = random.Random(max_entries)
    for step in range(6000):
        skewed = rng.random() < 0.5
        number = int(rng.paretovariate(1.0)) if skewed else rng.randrange(10 * max_entries + 5)
        key = f"k{number}"
        action = rng.random()
        if action < 0.45:
            store.get(key)
        elif action < 0.75:
            store.set(key, step, rng.choice([None, 1.0, 5.0]))
        elif action < 0.8:
            store.add(key, step, None)
        elif action < 0.85:
            store.delete(key)
        elif action < 0.88:
            store.delete_many([key, f"k{step % 7}"])
        elif action < 0.91:
            store.expire(key, 2.0)
        elif action < 0.94:
            store.incr(f"n{step % 5}", 1, None)
        elif action < 0.945:
            store.delete_pattern("k1*")
        elif action < 0.99:
            store.set(key, step, None)
        else:
            clock.now += 0.7  # entries expire; later writes sweep them
        assert len(store) <= max_entries
    assert_in_step(store)
    assert store.evictions > 0


def test_ttl_behaviour_unchanged() -> None:
    clock = Clock()
    store = MemoryBackend(max_entries=10_000, eviction="tinylfu", clock=clock)
    for i in range(1000):
        store.set(f"k{i}", i, 5)
    store.set("keep", 1, None)
    assert store.ttl("k3") == pytest.approx(5)
    clock.now += 10
    assert store.get("k1") is MISSING  # lazy: gone when read
    assert store.exists("k2") is False and store.ttl("k2") is MISSING
    assert len(store) == 1000
    store.set("trigger", 1, None)  # periodic: the next write sweeps the expired ones
    assert len(store) == 2
    assert store.ttl("keep") is None and store.get("keep") == 1
    assert_in_step(store)


def test_threads_hammering_one_store() -> None:
    store = MemoryBackend(max_entries=300, eviction="tinylfu")
    cache = Cache(backend=store)
    errors: list[BaseException] = []
    start = threading.Event()

    @cache.cached(ttl=60)
    def square(x: int) -> int:
        return x * x

    def worker(n: int) -> None:
        start.wait()
        try:
            for i in range(3000):
                key = f"k{(i * 7 + n) % 800}"
                cache.set(key, i, ttl=60)
                cache.get(key)
                assert square(i % 400) == (i % 400) ** 2
                if i % 10 == 0:
                    cache.delete(key)
                cache.incr(f"counter{n}")
        except BaseException as exc:  # pragma: no cover - the assertion reports it
            errors.append(exc)

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)  # switch threads often, to interleave reads and writes
    try:
        threads = [threading.Thread(target=worker, args=(n,)) for n in range(6)]
        for thread in threads:
            thread.start()
        start.set()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(interval)
    assert errors == []
    assert_in_step(store)
