from __future__ import annotations

import asyncio
import threading

from cachekit import Cache
from cachekit.core.sentinel import MISSING
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


# -- the reader: the one hit path of @cached on memory ------------------------------------
def test_reader_reads_checks_expiry_and_touches() -> None:
    clock = Clock()
    store = MemoryBackend(max_entries=3, clock=clock)
    read = store.reader()
    assert read("a") is MISSING
    store.set("a", "A", 10)
    store.set("b", "B", None)
    store.set("c", "C", None)
    assert read("a") == "A"  # a hit is the LRU touch: "a" is now the most recently used
    store.set("d", "D", None)
    assert read("b") is MISSING and read("a") == "A"
    clock.now += 10  # the deadline itself is expired, as for get()
    assert read("a") is MISSING
    assert store.keys("a") == [] and len(store) == 2  # the expired entry is dropped
    store.set("a", "again", None)
    assert read("a") == "again"  # a reader bound before a write sees it


def test_reader_returns_the_stored_form() -> None:
    """Boxed entries (stored with metadata: tags) come back boxed; the cache unwraps them."""
    cache = Cache()
    cache.set("k", [1], tags=["t"])
    stored = cache._backend.reader()(cache.make_key("k"))
    assert stored.value == [1] and stored.meta == {"tags": ["t"]}


class CountingReader(MemoryBackend):
    """A memory store counting the reads its reader makes."""

    reads = 0

    def reader(self):  # type: ignore[no-untyped-def]
        read = super().reader()

        def counted(key: str) -> object:
            self.reads += 1
            return read(key)

        return counted


def test_every_decorated_hit_goes_through_the_reader() -> None:
    store = CountingReader()
    cache = Cache(backend=store)
    calls: list[tuple[object, ...]] = []

    @cache.cached(ttl=60)
    def one(x: object) -> object:
        calls.append((x,))
        return x

    @cache.cached(ttl=60)
    def two(x: int, y: int = 2) -> int:
        calls.append((x, y))
        return x + y

    @cache.cached(ttl=60, tags=["t"])
    def tagged(x: int) -> list[int]:
        calls.append((x,))
        return [x]

    long_text = "x" * 500  # a key past MAX_KEY_LENGTH: shortened, and still found
    for _ in range(2):
        assert one(7) == 7 and one(x=7) == 7 and one("s") == "s" and one(2**70) == 2**70
        assert one(long_text) == long_text and one(1.5) == 1.5
        assert two(1) == 3 and two(1, 2) == 3 and two(1, y=2) == 3 and two(x=1) == 3
        assert tagged(3) == [3]
    assert calls == [(7,), ("s",), (2**70,), (long_text,), (1.5,), (1, 2), (3,)]
    # 22 calls, 7 keys (x=7 is the key of 7; two(1), two(1, 2), two(x=1) are one): every
    # call looked up once through the reader, and each miss once more by the general path
    assert store.reads == 22 + 7 and cache.stats()["hits"] == 22 - 7


async def test_async_hits_go_through_the_reader() -> None:
    store = CountingReader()
    cache = Cache(backend=store)
    calls: list[int] = []

    @cache.cached(ttl=60)
    async def double(x: int) -> int:
        calls.append(x)
        return 2 * x

    for _ in range(3):
        assert await double(4) == 8 and await double(x=4) == 8
    # 6 calls, one key: each looked up once through the reader, and the miss once more by
    # the general path (as sync does, above)
    assert calls == [4] and store.reads == 6 + 1 and cache.stats()["hits"] == 5


class LocalStore:
    """A third-party in-process store: the public contract and a reader, nothing else."""

    local = True

    def __init__(self) -> None:
        self.inner = MemoryBackend()
        self.reads = 0

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)

    def reader(self):  # type: ignore[no-untyped-def]
        read = self.inner.reader()

        def counted(key: str) -> object:
            self.reads += 1
            return read(key)

        return counted


def test_any_in_process_store_with_a_reader_gets_the_fast_path() -> None:
    store = LocalStore()
    cache = Cache(backend=store)

    @cache.cached(ttl=60)
    def ident(x: int) -> int:
        return x

    assert ident(1) == 1 and ident(1) == 1  # a miss (two reads), then a hit (one)
    assert store.reads == 3 and cache.stats()["hits"] == 1
    cache.set("k", [1])
    assert cache.get("k") == [1] and store.reads == 4  # cache.get reads through it too


def test_decorated_hits_never_serve_an_expired_value() -> None:
    clock = Clock()
    cache = Cache(backend=MemoryBackend(clock=clock))
    calls: list[object] = []

    @cache.cached(ttl=5)
    def one(x: int) -> tuple[int, int]:
        calls.append(x)
        return (x, len(calls))

    @cache.cached(ttl=5)
    def two(x: int, y: int) -> tuple[int, int]:
        calls.append(x)
        return (x, len(calls))

    @cache.cached(ttl=5)
    async def three(x: int) -> tuple[int, int]:
        calls.append(x)
        return (x, len(calls))

    assert one(1) == (1, 1) and two(1, 1) == (1, 2) and asyncio.run(three(1)) == (1, 3)
    clock.now += 4.9
    assert one(1) == (1, 1) and two(1, 1) == (1, 2) and asyncio.run(three(1)) == (1, 3)
    clock.now += 0.1  # the deadline: expired
    assert one(1) == (1, 4) and two(1, 1) == (1, 5) and asyncio.run(three(1)) == (1, 6)
    assert one(x=1) == (1, 4)


def test_a_stampede_function_does_not_take_the_reader() -> None:
    """stale_ttl, early_refresh, lock, stale_if_error read the metadata: their own path."""
    store = CountingReader()
    cache = Cache(backend=store)

    @cache.cached(ttl=60, stale_ttl=30)
    def ident(x: int) -> int:
        return x

    assert ident(1) == 1 and ident(1) == 1
    assert store.reads == 0 and cache.stats()["hits"] == 1


def test_template_keys_take_the_reader_and_key_functions_are_called_once() -> None:
    store = CountingReader()
    cache = Cache(backend=store)
    made: list[int] = []

    @cache.cached(ttl=60, key="user:{x}")
    def templated(x: int) -> int:
        return x

    def key_of(x: int) -> str:
        made.append(x)
        return f"k{x}"

    @cache.cached(ttl=60, key=key_of)
    def keyed(x: int) -> int:
        return x

    assert [templated(1), templated(1), templated(x=1)] == [1, 1, 1]
    assert store.reads == 3 + 1 and cache.get("user:1") == 1
    assert [keyed(2), keyed(2)] == [2, 2]
    assert made == [2, 2]  # once per call, the miss included


def test_written_keys_are_interned() -> None:
    """The one-argument hit path remembers interned keys: the store's must be the same
    objects, so a hit finds its entry by identity (a performance property, kept here)."""
    import sys

    store = MemoryBackend()
    key = "".join(["user", ":", "42"])  # built at run time: not interned
    store.set(key, 1, None)
    assert store.keys()[0] is sys.intern("user:42")
    cache = Cache(backend=store)

    @cache.cached(ttl=60)
    def ident(x: int) -> int:
        return x

    assert ident(7) == 7
    (stored,) = [k for k in store.keys("*") if k.endswith("[7]")]
    assert stored is sys.intern(stored)
