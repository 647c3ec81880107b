"""invalidate_tags on every backend, across processes on Redis, and its Redis layout."""

from __future__ import annotations

import subprocess
import sys

import pytest
import redis
from conftest import unique_prefix

from cachekit import Cache, ConfigurationError
from cachekit.tags.rules import INVALIDATE_SCRIPT, dying_key, tag_key
from cachekit.testing.servers import RedisServer


def test_every_write_path_registers_tags(any_cache: Cache) -> None:
    any_cache.set("a", 1, tags=["users"])
    any_cache.set("b", 2, tags=("users", "admins"))
    any_cache.set_many({"c": 3, "d": 4}, tags=iter(["users"]))  # a generator, read once
    assert any_cache.add("e", 5, tags=["users"])
    assert any_cache.get_or_set("f", lambda: 6, tags=["users"]) == 6
    any_cache.set("untagged", 7)
    any_cache.set("other", 8, tags=["admins"])

    @any_cache.cached(key="g:{n}", tags=("users",))
    def g(n: int) -> int:
        return n

    g(1)
    assert any_cache.invalidate_tags("users") == 7
    assert any_cache.get_many([*"abcdef", "g:1", "untagged", "other"]) == {
        "untagged": 7,
        "other": 8,
    }
    assert any_cache.invalidate_tags("users") == 0  # the set went with the entries
    assert any_cache.invalidate_tags("admins", "nobody") == 1


async def test_async_twins(any_cache: Cache) -> None:
    await any_cache.aset("a", 1, tags=["t"])
    await any_cache.aset_many({"b": 2}, tags=["t"])
    await any_cache.aget_or_set("c", lambda: 3, tags=["t"])
    assert await any_cache.ainvalidate_tags("t") == 3
    assert await any_cache.aget_many(["a", "b", "c"]) == {}


def test_entries_written_after_an_invalidation_are_tagged_again(any_cache: Cache) -> None:
    any_cache.set("a", 1, tags=["t"])
    any_cache.invalidate_tags("t")
    any_cache.set("a", 2, tags=["t"])
    assert any_cache.invalidate_tags("t") == 1
    assert any_cache.get("a") is None


def test_bad_tags_are_refused(any_cache: Cache) -> None:
    with pytest.raises(ConfigurationError):
        any_cache.set("a", 1, tags="users")  # a string is not a list of tags
    with pytest.raises(ConfigurationError):
        any_cache.set("a", 1, tags=[""])


def test_invalidation_reaches_another_process(redis_server: RedisServer) -> None:
    prefix = unique_prefix()
    cache = Cache(redis_server.url, prefix=prefix)
    cache.set("user:1", "ann", tags=["users"])
    cache.set("user:2", "bob", tags=["users"])
    code = (
        "import sys; from cachekit import Cache; "
        "print(Cache(sys.argv[1], prefix=sys.argv[2]).invalidate_tags('users'))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, redis_server.url, prefix],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == "2"
    assert cache.get_many(["user:1", "user:2"]) == {}
    cache.close()


def test_tag_sets_live_as_long_as_their_longest_entry(redis_server: RedisServer) -> None:
    prefix = unique_prefix()
    cache = Cache(redis_server.url, prefix=prefix)
    client = redis.Redis.from_url(redis_server.url)
    name = tag_key(cache.namespace.text, "t")
    cache.set("short", 1, ttl=10, tags=["t"])
    assert 10_000 < client.pttl(name) <= 11_000
    cache.set("long", 1, ttl=100, tags=["t"])
    assert 100_000 < client.pttl(name) <= 101_000
    cache.set("short2", 1, ttl=5, tags=["t"])
    assert client.pttl(name) > 99_000  # never lowered
    cache.set("forever", 1, ttl=None, tags=["t"])
    assert client.pttl(name) == -1
    cache.set("short3", 1, ttl=5, tags=["t"])
    assert client.pttl(name) == -1  # a member that never expires keeps the set
    # one slot for the set and its dying twin: the hash tag is the tag's name
    assert name.endswith(":tag:{t}") and dying_key(cache.namespace.text, "t") == name + ":dying"
    assert cache.clear() >= 5 and client.exists(name) == 0  # clear() takes the tag sets too
    cache.close()
    client.close()


def test_an_interrupted_invalidation_is_finished_by_the_next(redis_server: RedisServer) -> None:
    cache = Cache(redis_server.url, prefix=unique_prefix())
    client = redis.Redis.from_url(redis_server.url)
    ns = cache.namespace.text
    for i in range(50):
        cache.set(f"k{i}", i, tags=["t"])
    # an invalidator moved the set aside and died before deleting anything
    client.eval(INVALIDATE_SCRIPT, 2, tag_key(ns, "t"), dying_key(ns, "t"))
    cache.set("late", 1, tags=["t"])  # written after: in a fresh set
    assert cache.invalidate_tags("t") == 51
    assert cache.get_many([f"k{i}" for i in range(50)] + ["late"]) == {}
    assert client.exists(tag_key(ns, "t"), dying_key(ns, "t")) == 0
    cache.close()
    client.close()


def test_a_redis_hit_stays_one_command(redis_server: RedisServer) -> None:
    cache = Cache(redis_server.url, prefix=unique_prefix())
    cache.set("a", 1, tags=["t"])
    client = cache._backend.clients.get()
    sent: list[tuple[object, ...]] = []
    original = client.execute_command

    def counting(*args: object, **kwargs: object) -> object:
        sent.append(args)
        return original(*args, **kwargs)

    client.execute_command = counting
    try:
        assert cache.get("a") == 1
    finally:
        client.execute_command = original
    assert [args[0] for args in sent] == ["GET"]
    cache.clear()
    cache.close()


def test_memory_tag_sets_drop_dead_members_as_they_grow() -> None:
    from cachekit.tags.rules import MemoryTagIndex

    cache = Cache(prefix=unique_prefix(), max_entries=100)
    for i in range(5_000):
        cache.set(i, i, tags=["t"])  # most are evicted: max_entries=100
    assert len(cache._backend.local_state().get(MemoryTagIndex)) < 2_100
    assert cache.invalidate_tags("t") == 100


def test_memory_pruning_keeps_the_keys_being_registered() -> None:
    cache = Cache(prefix=unique_prefix(), max_entries=100_000)
    for i in range(5_000):  # crosses the pruning thresholds (1024, 2048, 4096)
        cache.set(i, i, tags=["t"])
    assert cache.invalidate_tags("t") == 5_000
    assert cache.get_many(range(5_000)) == {}
