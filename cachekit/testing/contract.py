"""The backend conformance suite: :class:`CacheContract` (import it from
:mod:`cachekit.testing`, whose docstring shows how). Needs pytest and pytest-asyncio
(``pip install 'cachekit[test]'``).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

try:
    import pytest
except ImportError as exc:  # pragma: no cover
    raise ImportError("cachekit.testing needs pytest: pip install 'cachekit[test]'") from exc

from .. import Cache, IncrementError, SerializationError

__all__ = ["CacheContract", "closing_caches"]

MakeCache = Callable[[str], Cache]


def closing_caches(build: MakeCache) -> Iterator[MakeCache]:
    """For a ``make_cache`` fixture (``yield from closing_caches(build)``): ``build``, with
    every cache it made closed when the test ends."""
    made: list[Cache] = []

    def make(prefix: str) -> Cache:
        made.append(build(prefix))
        return made[-1]

    yield make
    for cache in made:
        cache.close()


class _Unencodable:
    pass


class CacheContract:
    """Behaviour every backend must show through :class:`~cachekit.Cache`."""

    @pytest.fixture
    def cache(self, make_cache: MakeCache) -> Iterator[Cache]:
        cache = make_cache(f"c{uuid.uuid4().hex[:10]}")
        yield cache
        cache.clear()

    # -- get / set ---------------------------------------------------------------------
    def test_miss_returns_default(self, cache: Cache) -> None:
        assert cache.get("absent") is None
        assert cache.get("absent", "fallback") == "fallback"

    def test_round_trip_values(self, cache: Cache) -> None:
        values: dict[str, Any] = {
            "dict": {"a": 1, "nested": {"b": [1, 2, 3]}},
            "list": [1, "two", 3.0, None, True],
            "str": "héllo wörld ✓",
            "int": 42,
            "negative": -7,
            "float": 3.25,
            "true": True,
            "empty": "",
        }
        for key, value in values.items():
            assert cache.set(key, value) is True
        for key, value in values.items():
            assert cache.get(key) == value

    def test_none_is_a_value(self, cache: Cache) -> None:
        cache.set("none", None)
        assert cache.get("none", "default") is None
        assert cache.exists("none")

    def test_overwrite(self, cache: Cache) -> None:
        cache.set("k", 1)
        cache.set("k", 2)
        assert cache.get("k") == 2

    def test_add_only_if_absent(self, cache: Cache) -> None:
        assert cache.add("k", "first") is True
        assert cache.add("k", "second") is False
        assert cache.get("k") == "first"

    def test_delete(self, cache: Cache) -> None:
        cache.set("k", 1)
        assert cache.delete("k") is True
        assert cache.delete("k") is False
        assert cache.get("k") is None

    def test_many(self, cache: Cache) -> None:
        assert cache.set_many({"a": 1, "b": None, "c": [3]}) is True
        assert cache.get_many(["a", "b", "c", "missing"]) == {"a": 1, "b": None, "c": [3]}
        assert cache.get_many([]) == {}
        assert cache.delete_many(["a", "c", "missing"]) == 2
        assert cache.get_many(["a", "b", "c"]) == {"b": None}

    def test_exists(self, cache: Cache) -> None:
        assert not cache.exists("k")
        cache.set("k", 0)
        assert cache.exists("k")

    # -- expiry ------------------------------------------------------------------------
    def test_ttl(self, cache: Cache) -> None:
        cache.set("short", 1, ttl=30)
        left = cache.ttl("short")
        assert left is not None and 28 < left <= 30
        cache.set("forever", 1, ttl=None)
        assert cache.ttl("forever") is None
        assert cache.ttl("missing") is None

    def test_entries_expire(self, cache: Cache) -> None:
        cache.set("k", "v", ttl=0.05)
        assert cache.get("k") == "v"
        time.sleep(0.12)  # waiting for the clock itself, not for another thread
        assert cache.get("k") is None
        assert not cache.exists("k")

    def test_zero_ttl_deletes(self, cache: Cache) -> None:
        cache.set("k", "v")
        assert cache.set("k", "new", ttl=0) is False
        assert cache.get("k") is None

    def test_expire(self, cache: Cache) -> None:
        cache.set("k", "v", ttl=None)
        assert cache.expire("k", 20) is True
        left = cache.ttl("k")
        assert left is not None and 18 < left <= 20
        assert cache.expire("k", None) is True
        assert cache.ttl("k") is None
        assert cache.expire("missing", 10) is False

    def test_default_ttl(self, make_cache: MakeCache) -> None:
        cache = make_cache(f"d{uuid.uuid4().hex[:10]}")
        cache.default_ttl = 40
        cache.set("k", 1)
        left = cache.ttl("k")
        assert left is not None and 38 < left <= 40
        cache.clear()

    # -- counters ----------------------------------------------------------------------
    def test_incr(self, cache: Cache) -> None:
        assert cache.incr("n") == 1
        assert cache.incr("n", 5) == 6
        assert cache.incr("n", -10) == -4
        assert cache.get("n") == -4
        cache.set("m", 10)
        assert cache.incr("m") == 11

    def test_incr_non_integer(self, cache: Cache) -> None:
        cache.set("s", "text")
        with pytest.raises(IncrementError):
            cache.incr("s")
        assert cache.get("s") == "text"

    def test_incr_new_counter_gets_ttl(self, cache: Cache) -> None:
        cache.incr("n", ttl=30)
        left = cache.ttl("n")
        assert left is not None and 28 < left <= 30
        cache.incr("n", ttl=5)  # an existing counter keeps its expiry
        left = cache.ttl("n")
        assert left is not None and left > 25

    # -- namespaces --------------------------------------------------------------------
    def test_clear_touches_only_this_namespace(self, make_cache: MakeCache) -> None:
        mine, theirs = make_cache("ns-mine"), make_cache("ns-theirs")
        mine.set_many({"a": 1, "b": 2})
        theirs.set("a", "kept")
        assert mine.clear() == 2
        assert mine.get_many(["a", "b"]) == {}
        assert theirs.get("a") == "kept"
        theirs.clear()

    def test_delete_pattern(self, make_cache: MakeCache) -> None:
        cache, other = make_cache("pat[1]*"), make_cache("pat[1]x")
        cache.set_many({"user:1": 1, "user:2": 2, "order:1": 3})
        other.set("user:9", 9)
        assert cache.delete_pattern("user:*") == 2
        assert cache.get_many(["user:1", "user:2", "order:1"]) == {"order:1": 3}
        assert other.get("user:9") == 9
        cache.clear()
        other.clear()

    # -- keys --------------------------------------------------------------------------
    def test_awkward_keys(self, cache: Cache) -> None:
        keys: list[Any] = [
            "",
            "with space",
            "new\nline",
            "tab\tand ünicode ✓",
            42,
            ("tuple", 1),
            uuid.UUID(int=7),
            b"bytes",
            "x" * 10_000,
        ]
        for index, key in enumerate(keys):
            cache.set(key, index)
        for index, key in enumerate(keys):
            assert cache.get(key) == index, key

    def test_long_keys_do_not_collide(self, cache: Cache) -> None:
        first, second = "k" * 5000 + "1", "k" * 5000 + "2"
        cache.set(first, 1)
        cache.set(second, 2)
        assert (cache.get(first), cache.get(second)) == (1, 2)

    # -- cache-aside -------------------------------------------------------------------
    def test_get_or_set(self, cache: Cache) -> None:
        calls: list[int] = []

        def load() -> dict[str, int]:
            calls.append(1)
            return {"v": 1}

        assert cache.get_or_set("k", load, ttl=30) == {"v": 1}
        assert cache.get_or_set("k", load, ttl=30) == {"v": 1}
        assert len(calls) == 1

    def test_cached_function(self, cache: Cache) -> None:
        calls: list[tuple[int, int]] = []

        @cache.cached(ttl=30)
        def add(a: int, b: int = 2) -> int:
            calls.append((a, b))
            return a + b

        assert add(1) == 3
        assert add(1, b=2) == 3
        assert add(a=1, b=2) == 3
        assert add(1, 3) == 4
        assert calls == [(1, 2), (1, 3)]
        assert cache.get(add.key(1)) == 3
        assert add.invalidate(1) is True
        assert add(1) == 3
        assert calls[-1] == (1, 2)

    def test_stats_count_hits_and_misses(self, cache: Cache) -> None:
        before = cache.stats()
        cache.get("absent")
        cache.set("k", 1)
        cache.get("k")
        after = cache.stats()
        assert after["hits"] - before["hits"] == 1
        assert after["misses"] - before["misses"] == 1

    def test_ping(self, cache: Cache) -> None:
        assert cache.ping() is True

    def test_unencodable_value(self, cache: Cache) -> None:
        if cache.serializer is None:
            pytest.skip("this backend stores objects as they are")
        with pytest.raises(SerializationError, match="_Unencodable"):
            cache.set("k", _Unencodable())
        assert not cache.exists("k")

    # -- async twins -------------------------------------------------------------------
    def test_async_api(self, cache: Cache) -> None:
        async def scenario() -> None:
            assert await cache.aget("k") is None
            assert await cache.aset("k", {"v": 1}, ttl=30) is True
            assert await cache.aget("k") == {"v": 1}
            assert await cache.aadd("k", 2) is False
            assert await cache.aexists("k")
            left = await cache.attl("k")
            assert left is not None and 28 < left <= 30
            assert await cache.aexpire("k", None) is True
            assert await cache.attl("k") is None
            assert await cache.aset_many({"a": 1, "b": 2})
            assert await cache.aget_many(["a", "b", "z"]) == {"a": 1, "b": 2}
            assert await cache.adelete_many(["a", "b"]) == 2
            assert await cache.aincr("n", 3) == 3
            assert await cache.aget_or_set("g", lambda: "loaded") == "loaded"

            async def load() -> str:
                return "async-loaded"

            assert await cache.aget_or_set("h", load) == "async-loaded"
            assert await cache.adelete_pattern("[gh]") == 2
            assert await cache.adelete("k") is True
            assert await cache.aping() is True
            assert cache.get("n") == 3  # the sync and async sides see one store
            assert await cache.aclear() >= 1

        asyncio.run(scenario())

    def test_async_cached_function(self, cache: Cache) -> None:
        calls: list[int] = []

        @cache.cached(ttl=30)
        async def double(x: int) -> int:
            calls.append(x)
            await asyncio.sleep(0)
            return 2 * x

        async def scenario() -> None:
            assert await double(2) == 4
            assert await double(x=2) == 4
            assert calls == [2]
            assert await double.ainvalidate(2) is True
            assert await double(2) == 4
            assert calls == [2, 2]

        asyncio.run(scenario())
