"""Cache.inspect / ainspect (cachekit.kv.inspection): what an entry holds, on every
backend, decoded as a read would; nothing counted; a failing backend is an error, never
"no entry"."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest

from cachekit import BackendError, Cache, EntryInfo
from cachekit.testing.servers import RedisServer
from tests.conftest import unique_prefix


def test_a_value_with_its_ttl_tags_and_layout(any_cache: Cache) -> None:
    cache = any_cache
    assert cache.inspect("nope") is None
    cache.set("user:1", {"name": "Ada"}, ttl=300, tags=["users", "admins"])
    before = cache.stats()
    info = cache.inspect("user:1")
    assert isinstance(info, EntryInfo)
    assert info.key == "user:1" and info.full_key == cache.make_key("user:1")
    assert info.decoded and info.value == {"name": "Ada"} and info.note is None
    assert info.ttl is not None and 290 < info.ttl <= 300
    assert set(info.tags) == {"users", "admins"} and "tags" not in info.metadata
    assert info.fresh_for is None
    after = cache.stats()
    assert (after["hits"], after["misses"]) == (before["hits"], before["misses"])
    if cache.shared:  # bytes: their size and layout
        assert info.size is not None and info.size > 0
        assert info.format == "value with metadata" and info.flags == ()
    else:  # memory keeps the object
        assert info.size is None and info.format == "object"
    cache.set("forever", [1], ttl=None)
    plain = cache.inspect("forever")
    assert plain is not None and plain.ttl is None and plain.tags == () and plain.value == [1]


def test_ainspect_says_the_same(any_cache: Cache) -> None:
    any_cache.set("k", "v", ttl=60, tags=["t"])

    async def main() -> tuple[EntryInfo | None, EntryInfo | None]:
        return await any_cache.ainspect("k"), await any_cache.ainspect("gone")

    found, missing = asyncio.run(main())
    assert missing is None and found is not None
    assert (found.value, found.tags, found.decoded) == ("v", ("t",), True)
    assert found.full_key == any_cache.inspect("k").full_key  # type: ignore[union-attr]


def test_a_stale_ttl_entry_says_how_long_it_stays_fresh(any_cache: Cache) -> None:
    @any_cache.cached(ttl=60, stale_ttl=30)
    def price(item: int) -> float:
        return 9.5

    assert price(1) == 9.5
    info = any_cache.inspect(price.key(1))
    assert info is not None and info.value == 9.5
    assert info.fresh_for is not None and info.ttl is not None
    assert 50 < info.fresh_for <= 60 < info.ttl <= 90
    assert abs(info.metadata["x"] - (time.time() + info.fresh_for)) < 5


def test_counters(any_cache: Cache) -> None:
    any_cache.incr("visits")
    info = any_cache.inspect("visits")
    assert info is not None and info.decoded and info.value == 1 and info.kind == "integer"
    assert "counter" in info.format


def test_signed_entries_and_counters(redis_url: str) -> None:
    prefix = unique_prefix()
    with Cache(redis_url, prefix=prefix, secret="s3cret") as cache:
        cache.set("k", {"v": 1})
        info = cache.inspect("k")
        assert info is not None and info.value == {"v": 1} and "signed" in info.flags
        cache.incr("n", 5)
        counter = cache.inspect("n")
        assert counter is not None and counter.decoded and counter.value == 5
        # a bare integer written by someone else, without the counter mark: the cache
        # would not serve it, and inspect does not call it decoded
        cache.client.set(cache.make_key("forged"), b"42")
        forged = cache.inspect("forged")
        assert forged is not None and not forged.decoded and forged.value is None
        assert forged.note and cache.get("forged") is None
        with Cache(redis_url, prefix=prefix, secret="other") as wrong:
            refused = wrong.inspect("k")
            assert refused is not None and not refused.decoded and "signature" in str(refused.note)
        cache.clear()


def test_a_foreign_value_is_found_but_not_decoded(redis_url: str) -> None:
    with Cache(redis_url, prefix=unique_prefix()) as cache:
        cache.client.set(cache.make_key("junk"), b"\xffnot an entry")
        info = cache.inspect("junk")
        assert info is not None and not info.decoded and info.note and info.value is None
        assert info.size == len(b"\xffnot an entry") and info.kind == "unknown"
        cache.clear()


@pytest.fixture
def down_cache(private_redis: RedisServer) -> Iterator[Cache]:
    cache = Cache(private_redis.url, prefix=unique_prefix(), timeout=0.2)
    cache.set("k", 1)
    private_redis.kill()
    yield cache
    cache.close()


def test_a_failing_backend_is_an_error_never_no_entry(down_cache: Cache) -> None:
    with pytest.raises(BackendError):
        down_cache.inspect("k")  # on_error="ignore" does not turn it into None
    with pytest.raises(BackendError):  # the circuit is open now: still an error
        down_cache.inspect("k")
    with pytest.raises(BackendError):
        asyncio.run(down_cache.ainspect("k"))


def test_tag_key_names_the_tags_set(redis_url: str) -> None:
    with Cache(redis_url, prefix=unique_prefix()) as cache:
        cache.set("a", 1, tags=["t"])
        members = cache.client.smembers(cache.tag_key("t"))
        assert members == {cache.make_key("a").encode()}
        assert cache.tag_key("t") != cache.tag_key("u")
        assert not cache.tag_key("t").startswith(cache.namespace.text)  # outside clear()'s glob
        cache.clear()
