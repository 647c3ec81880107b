"""cache.invalidate_all(): the namespace generation (cachekit.core.generation).

Two Cache objects over one Redis stand for two processes (each knows its own generation);
one test runs a real second process. Clocks are driven, never slept on.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from conftest import unique_prefix
from hypothesis import given
from hypothesis import strategies as st

from cachekit import BackendError, Cache
from cachekit.core.generation import Generation, generation_key, parse_generation
from cachekit.leases.rules import is_tombstone
from cachekit.core.keys import Namespace
from cachekit.sessions import SessionStore
from cachekit.testing.servers import RedisServer


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# -- pure ---------------------------------------------------------------------------------
segments = st.text(st.characters(codec="utf-8"), min_size=1, max_size=6)


@given(segments, segments, segments, segments, st.integers(0, 12), st.integers(0, 12))
def test_generations_never_hold_one_another(
    p1: str, v1: str, p2: str, v2: str, g1: int, g2: int
) -> None:
    """No generation of a namespace holds another generation's keys, or any generation of
    another namespace's, nor a user key of generation 0 another generation's key."""
    if p1.startswith(("!", "#")) or p2.startswith(("!", "#")):
        return
    a = Namespace(p1, v1).generation(g1)
    b = Namespace(p2, v2).generation(g2)
    if (p1, v1, g1) != (p2, v2, g2):
        assert not a.text.startswith(b.text) and not b.text.startswith(a.text)


def test_generation_zero_is_the_namespace_itself() -> None:
    ns = Namespace("shop", 3)
    assert ns.generation(0) is ns
    assert ns.generation(2).text == "shop:3%g2:"
    assert ns.key("g2:x") != ns.generation(2).key("x")
    assert Namespace("shop", "3%g2").text == "shop:3%25g2:"  # a bare % is never a segment's
    assert generation_key(ns) == "#shop:3:gen:"
    owned = Namespace("p", "", owner="django")
    assert owned.generation(1).text == "!django:p%g1:"


def test_parse_generation() -> None:
    assert parse_generation(None) == 0
    assert parse_generation(b"7") == 7
    assert parse_generation(b"x") is None and parse_generation(b"-1") is None


def test_the_generation_is_read_when_due_and_a_late_reply_does_not_undo_a_bump() -> None:
    clock = Clock()
    gen = Generation(Namespace("p"), poll=1.0, movable=True, clock=clock)
    assert gen.due() and not gen.known  # a fresh process reads it first
    epoch, read_at = gen.reading()
    gen.learn(3, epoch, read_at)
    assert gen.ns.text == "p:1%g3:" and not gen.due()
    clock.now += 1.0
    assert gen.due()
    epoch, read_at = gen.reading()  # a read in flight ...
    gen.bumped(4)  # ... while this process bumps
    gen.learn(3, epoch, read_at)  # the older reply is dropped
    assert gen.number == 4
    gen.expire()  # the near link heard the key change
    assert gen.due()
    fixed = Generation(Namespace("p"), poll=0.0, movable=False, clock=clock)
    assert not fixed.due()  # memory: never read


def test_text_of_names_the_entry_generation() -> None:
    gen = Generation(Namespace("p"), poll=1.0, movable=True)
    gen.bumped(12)
    assert gen.text_of("p:1%g12:k") == "p:1%g12:"
    assert gen.text_of("p:1%g3:k") == "p:1%g3:"
    assert gen.text_of("p:1:k") == "p:1:"
    assert gen.is_generation_internal("#p:1%g3:tag:{t}", "tag")
    assert not gen.is_generation_internal("#p:1%g3:lock:{p:1%g3:tag:x}", "tag")


# -- two processes sharing Redis ----------------------------------------------------------
@pytest.fixture
def pair(redis_server: RedisServer) -> Iterator[tuple[Cache, Cache]]:
    prefix = unique_prefix()
    a = Cache(redis_server.url, prefix=prefix, generation_poll=0)
    b = Cache(redis_server.url, prefix=prefix, generation_poll=0)
    yield a, b
    a.clear()
    a.close()
    b.close()


def test_a_bump_in_one_process_is_seen_by_the_other(pair: tuple[Cache, Cache]) -> None:
    a, b = pair
    calls: list[int] = []

    @b.cached(ttl=60)
    def double(x: int) -> int:
        calls.append(x)
        return 2 * x

    a.set("k", "old")
    assert double(1) == 2 and double(1) == 2 and calls == [1]
    assert b.get("k") == "old"
    assert a.invalidate_all() is True
    assert a.generation == 1
    assert b.get("k") is None and b.generation == 1
    assert double(1) == 2 and calls == [1, 1]  # recomputed
    assert double(1) == 2 and calls == [1, 1]  # and cached in the new generation
    b.set("k", "new")
    assert a.get("k") == "new"
    assert b.make_key("k").endswith("%g1:k")


async def test_async_bump_is_seen_by_the_other(pair: tuple[Cache, Cache]) -> None:
    a, b = pair
    calls: list[int] = []

    @b.cached(ttl=60)
    async def double(x: int) -> int:
        calls.append(x)
        return 2 * x

    await a.aset("k", "old")
    assert await double(1) == 2 and await double(1) == 2 and calls == [1]
    assert await a.ainvalidate_all() is True
    assert await b.aget("k") is None
    assert await double(1) == 2 and calls == [1, 1]
    assert await b.aget_or_set("g", lambda: "fresh") == "fresh"


def test_other_processes_see_it_within_the_poll_interval(redis_server: RedisServer) -> None:
    prefix = unique_prefix()
    a = Cache(redis_server.url, prefix=prefix)
    b = Cache(redis_server.url, prefix=prefix, generation_poll=5.0)
    clock = Clock()
    b._generation.clock = clock
    calls: list[int] = []

    @b.cached(ttl=60)
    def one(x: int) -> int:
        calls.append(x)
        return x

    try:
        a.set("k", "old")
        assert b.get("k") == "old" and one(1) == 1  # b read generation 0
        a.invalidate_all()
        clock.now += 4.9
        assert b.get("k") == "old" and one(1) == 1 and calls == [1]  # trusted for 5 s
        clock.now += 0.1
        assert b.get("k") is None and b.generation == 1
        assert one(1) == 1 and calls == [1, 1]
    finally:
        a.clear()
        a.close()
        b.close()


def test_a_process_started_after_the_bump_never_serves_the_old_generation(
    redis_server: RedisServer,
) -> None:
    prefix = unique_prefix()
    a = Cache(redis_server.url, prefix=prefix)
    try:
        a.set("k", "old")
        a.invalidate_all()
        late = Cache(redis_server.url, prefix=prefix, generation_poll=3600)
        assert late.get("k") is None and late.generation == 1
        late.close()
    finally:
        a.clear()
        a.close()


def test_a_real_other_process_bumps(redis_server: RedisServer) -> None:
    prefix = unique_prefix()
    cache = Cache(redis_server.url, prefix=prefix, generation_poll=0)
    script = textwrap.dedent(
        """
        import sys
        from cachekit import Cache
        cache = Cache(sys.argv[1], prefix=sys.argv[2])
        print(cache.get("k"), cache.invalidate_all(), cache.generation)
        """
    )
    try:
        cache.set("k", "old")
        env = {k: v for k, v in os.environ.items() if not k.startswith("CACHEKIT_")}
        out = subprocess.run(
            [sys.executable, "-c", script, redis_server.url, prefix],
            capture_output=True, text=True, timeout=60, env=env, check=True,
        )  # fmt: skip
        assert out.stdout.split() == ["old", "True", "1"]
        assert cache.get("k") is None and cache.generation == 1
    finally:
        cache.clear()
        cache.close()


def test_a_load_in_flight_in_another_process_stores_under_the_old_generation(
    pair: tuple[Cache, Cache],
) -> None:
    """B's load read the source, A bumps, B's load stores: nobody serves it."""
    a, b = pair
    started, bumped = asyncio.Event(), asyncio.Event()
    source = {"row": "old"}

    @b.cached(ttl=60, key="row")
    async def load() -> str:
        value = source["row"]
        started.set()
        await bumped.wait()
        return value

    async def scenario() -> None:
        task = asyncio.ensure_future(load())
        await started.wait()
        source["row"] = "new"
        await a.ainvalidate_all()
        bumped.set()
        assert await task == "old"  # the caller that started before gets what it read
        assert await a.aget("row") is None and await b.aget("row") is None
        started.clear()
        assert await load() == "new"

    asyncio.run(scenario())


def test_generation_zero_keys_are_as_before(redis_server: RedisServer) -> None:
    cache = Cache(redis_server.url, prefix=unique_prefix())
    raw = redis.Redis.from_url(redis_server.url)
    try:
        cache.set("k", 1)
        assert raw.exists(f"{cache.prefix}:1:k")
        assert cache.generation == 0 and not raw.exists(generation_key(cache.namespace))
    finally:
        cache.clear()
        cache.close()
        raw.close()


def test_clear_removes_every_generation(redis_server: RedisServer) -> None:
    prefix = unique_prefix()
    a = Cache(redis_server.url, prefix=prefix)
    raw = redis.Redis.from_url(redis_server.url)
    try:
        a.set("g0", 1, tags=("t",))
        a.invalidate_all()
        a.set("g1", 1, tags=("t",))
        a.invalidate_all()
        a.set("g2", 1)
        held = a.lock("held", ttl=30)
        assert held.acquire()
        assert a.clear() >= 3
        left = [k.decode() for k in raw.scan_iter(match=f"*{prefix}*")]
        # only the generation, the held lock and (short-lived) invalidation marks stay
        # (a tag's ":inv" mark, an entry's tombstone in its own key)
        assert all(k.startswith(("#" + prefix + ":1:gen:", "#" + prefix + ":1:lock:"))
                   or ":inv" in k or is_tombstone(raw.get(k)) for k in left), left
        assert a.get("g2") is None and a.invalidate_tags("t") == 0
        held.release()
    finally:
        a.clear()
        a.close()
        raw.close()


# -- what a bump must not move ------------------------------------------------------------
@pytest.mark.parametrize("kind", ["memory", "redis"])
def test_locks_queues_rate_limits_and_sessions_stay(
    request: pytest.FixtureRequest, kind: str
) -> None:
    prefix = unique_prefix()
    if kind == "memory":
        a = Cache(prefix=prefix)
        b = Cache(prefix=prefix, backend=a._backend)  # another cache over the same store
    else:
        url = request.getfixturevalue("redis_server").url
        a = Cache(url, prefix=prefix, generation_poll=0)
        b = Cache(url, prefix=prefix, generation_poll=0)
    stored: list[dict[Any, Any]] = []
    try:
        held = a.lock("order:1", ttl=30)
        assert held.acquire()
        limiter = a.rate_limiter("api", rate="2/minute", burst=2)
        assert limiter.hit("u").allowed
        sessions = SessionStore(a)
        session = sessions.load(None)
        session["user"] = 42
        session_id = sessions.save(session).set_id
        assert session_id is not None
        users = b.write_behind(
            key="user:{}", load=lambda i: None, store_many=stored.append,
            batch_size=100, flush_interval=3600,
        )  # fmt: skip
        users.set(1, "queued")
        assert a.invalidate_all()
        assert not b.lock("order:1", ttl=30, blocking=False).acquire()  # still held
        assert limiter.hit("u").allowed and not limiter.hit("u").allowed  # still counted
        assert SessionStore(b).load(session_id)["user"] == 42  # still logged in
        users.flush()
        assert stored == [{1: "queued"}]  # the queued write survived
        held.release()
        assert b.lock("order:1", ttl=30, blocking=False).acquire()
    finally:
        a.clear()
        a.close()
        b.close()


def test_tags_work_after_a_bump(pair: tuple[Cache, Cache]) -> None:
    a, b = pair
    a.set("u1", "old", tags=("users",))
    a.invalidate_all()
    b.set("u1", "new", tags=("users",))
    b.set("u2", "new", tags=("users",))
    assert a.get("u1") == "new"
    assert a.invalidate_tags("users") == 2
    assert b.get("u1") is None and b.get("u2") is None


# -- failures ------------------------------------------------------------------------------
def test_redis_down_during_a_bump(private_redis: RedisServer) -> None:
    prefix = unique_prefix()
    cache = Cache(private_redis.url, prefix=prefix, timeout=0.2, retry_interval=0.05)
    strict = Cache(private_redis.url, prefix=prefix, timeout=0.2, on_error="raise")
    other = Cache(private_redis.url, prefix=prefix, generation_poll=0)
    try:
        cache.set("k", "old")
        assert other.get("k") == "old"
        private_redis.freeze()
        try:
            with pytest.raises(BackendError):
                strict.invalidate_all()
            assert cache.invalidate_all() is False  # fails open, no crash ...
            assert cache.get("k") is None  # (the circuit is open: nothing is read)
        finally:
            private_redis.thaw()
        deadline = time.monotonic() + 10
        while cache.stats()["circuit"] != "closed":  # the breaker's probe: no event
            assert time.monotonic() < deadline
            time.sleep(0.02)
        # ... and not lost: replayed before this process reads again
        assert other.get("k") is None and other.generation >= 1
        assert cache.get("k") is None
    finally:
        other.clear()
        for each in (cache, strict, other):
            each.close()


def test_a_failed_read_keeps_the_known_generation(private_redis: RedisServer) -> None:
    cache = Cache(private_redis.url, prefix=unique_prefix(), timeout=0.2, generation_poll=0)
    try:
        cache.invalidate_all()
        assert cache.generation == 1
        private_redis.freeze()
        try:
            assert cache.get("k") is None  # fails open
        finally:
            private_redis.thaw()
        assert cache.generation == 1
    finally:
        cache.close()


# -- memory ---------------------------------------------------------------------------------
def test_memory_invalidate_all_removes_the_entries() -> None:
    cache = Cache(prefix=unique_prefix())
    other = Cache(prefix=unique_prefix(), backend=cache._backend)
    calls: list[int] = []

    @cache.cached(ttl=60)
    def one(x: int) -> int:
        calls.append(x)
        return x

    cache.set("k", 1, tags=("t",))
    other.set("k", 2)
    assert one(1) == 1 and one(1) == 1 and calls == [1]
    assert cache.invalidate_all() is True
    assert cache.get("k") is None and cache.generation == 0
    assert other.get("k") == 2  # another namespace of the same store: untouched
    assert one(1) == 1 and calls == [1, 1]
