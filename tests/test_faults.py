"""Fail fast, then fail open: Redis dead, frozen, or holding entries we cannot read."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator

import pytest
import redis

from cachekit import BackendError, BackendUnavailableError, Cache
from cachekit.testing.servers import RedisServer, free_port

from conftest import unique_prefix


@pytest.fixture
def cache(private_redis: RedisServer) -> Iterator[Cache]:
    cache = Cache(private_redis.url, prefix=unique_prefix(), timeout=0.2, retry_interval=0.05)
    yield cache
    cache.close()


def wait_for(condition: object, timeout: float = 5.0) -> float:
    """Poll an external condition (a server coming back) until true; seconds waited."""
    start = time.monotonic()
    while not condition():  # type: ignore[operator]
        if time.monotonic() - start > timeout:
            raise AssertionError("condition not met in time")
        time.sleep(0.01)
    return time.monotonic() - start


def test_corrupt_and_foreign_entries_are_misses(
    cache: Cache, redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[int] = []

    @cache.cached(ttl=60, key="item:{n}")
    def load(n: int) -> dict[str, int]:
        calls.append(n)
        return {"n": n}

    raw = redis.Redis.from_url(cache.url)
    raw.set(cache.make_key("item:1"), b"\x01{not json")  # truncated/corrupt
    raw.set(cache.make_key("item:2"), b"written by someone else")  # foreign
    raw.set(cache.make_key("item:3"), b"\x11garbage")  # claims zlib, is not
    with caplog.at_level(logging.WARNING, logger="cachekit"):
        assert [load(1), load(2), load(3)] == [{"n": 1}, {"n": 2}, {"n": 3}]
    assert calls == [1, 2, 3]
    assert cache.stats()["corrupt"] == 3
    assert sum("unreadable entry" in r.message for r in caplog.records) == 3
    # the function's result replaced the bad entries
    assert [load(1), load(2), load(3)] == [{"n": 1}, {"n": 2}, {"n": 3}]
    assert calls == [1, 2, 3]
    raw.close()


def test_refused_connection_fails_open_fast(caplog: pytest.LogCaptureFixture) -> None:
    cache = Cache(f"redis://127.0.0.1:{free_port()}/0", timeout=0.2, retry_interval=0.05)
    calls: list[int] = []

    @cache.cached(ttl=60)
    def compute(n: int) -> int:
        calls.append(n)
        return n * 10

    with caplog.at_level(logging.WARNING, logger="cachekit"):
        results = [compute(i % 3) for i in range(200)]
    assert results == [(i % 3) * 10 for i in range(200)]
    assert len(calls) == 200
    stats = cache.stats()
    assert stats["errors"] >= 1 and stats["circuit"] == "open"
    assert stats["skipped"] >= 390  # the rest skipped the backend without trying it
    outage_lines = [r for r in caplog.records if "unavailable" in r.message]
    assert len(outage_lines) == 1 and not any(r.exc_info for r in caplog.records)
    assert cache.get("x", "default") == "default"
    assert cache.set("x", 1) is False
    cache.close()


def test_killed_redis_then_back(private_redis: RedisServer, cache: Cache) -> None:
    @cache.cached(ttl=60)
    def compute(n: int) -> int:
        return n + 1

    assert compute(1) == 2 and compute(1) == 2
    assert cache.stats()["hits"] == 1
    private_redis.kill()
    started = time.monotonic()
    assert [compute(1) for _ in range(100)] == [2] * 100
    assert time.monotonic() - started < 2.0  # one failed attempt, then no waiting at all
    assert cache.stats()["circuit"] == "open"
    private_redis.start()
    wait_for(lambda: cache.stats()["circuit"] == "closed")
    compute(1)  # stores again
    hits = cache.stats()["hits"]
    assert compute(1) == 2
    assert cache.stats()["hits"] == hits + 1


def test_frozen_redis_costs_one_timeout(private_redis: RedisServer, cache: Cache) -> None:
    @cache.cached(ttl=60)
    def compute(n: int) -> int:
        return n * 2

    compute(5)
    private_redis.freeze()
    try:
        first = time.monotonic()
        assert compute(5) == 10  # waits for the 0.2 s timeout once
        first_cost = time.monotonic() - first
        costs = []
        for _ in range(200):
            started = time.perf_counter()
            assert compute(5) == 10
            costs.append(time.perf_counter() - started)
        assert first_cost < 1.0
        # a frozen server must not be waited on again: well under one timeout per call
        assert max(costs) < 0.1
        assert cache.stats()["circuit"] == "open"
    finally:
        private_redis.thaw()
    waited = wait_for(lambda: cache.stats()["circuit"] == "closed")
    assert waited < 2.0
    assert compute(5) == 10
    assert cache.stats()["hits"] >= 1


def test_async_outage_fails_open(private_redis: RedisServer, cache: Cache) -> None:
    @cache.cached(ttl=60)
    async def compute(n: int) -> int:
        return n * 3

    async def scenario() -> None:
        assert await compute(2) == 6
        private_redis.kill()
        assert [await compute(2) for _ in range(50)] == [6] * 50
        assert await cache.aget("k", "d") == "d"

    asyncio.run(scenario())
    assert cache.stats()["circuit"] == "open"


def test_raise_mode() -> None:
    cache = Cache(
        f"redis://127.0.0.1:{free_port()}/0", timeout=0.2, on_error="raise", retry_interval=0.05
    )

    @cache.cached(ttl=60)
    def compute() -> int:
        return 1

    with pytest.raises(BackendUnavailableError) as info:
        cache.get("k")
    assert isinstance(info.value.__cause__, redis.exceptions.ConnectionError)
    with pytest.raises(BackendError):
        compute()  # the circuit is open now: raised at once
    with pytest.raises(BackendError):
        cache.set("k", 1)
    cache.close()


def test_incr_raises_when_backend_down() -> None:
    cache = Cache(f"redis://127.0.0.1:{free_port()}/0", timeout=0.2)
    with pytest.raises(BackendError):
        cache.incr("n")
    cache.close()


def test_building_a_cache_makes_no_network_call() -> None:
    started = time.monotonic()
    cache = Cache("redis://10.255.255.1:6379/0", timeout=5)  # unroutable: a call would hang
    assert time.monotonic() - started < 0.1
    cache.close()


def test_cache_works_again_after_close(private_redis: RedisServer) -> None:
    cache = Cache(private_redis.url, prefix=unique_prefix(), timeout=0.2, retry_interval=0.05)
    cache.set("k", 1)
    cache.close()
    assert cache.get("k") == 1  # reconnects lazily
    private_redis.kill()
    assert cache.get("k", "d") == "d"
    assert cache.stats()["circuit"] == "open"  # the breaker still works after close()
    private_redis.start()
    wait_for(lambda: cache.stats()["circuit"] == "closed")
    cache.close()


# -- invalidations made during an outage are not lost (issue 8) --------------------------
def _back(cache: Cache) -> None:
    wait_for(lambda: cache.stats()["circuit"] == "closed")
    assert cache._breaker.pending == 0


def test_delete_while_frozen_is_replayed_before_reads_resume(
    private_redis: RedisServer, cache: Cache
) -> None:
    @cache.cached(ttl=60, key="user:{n}")
    def user(n: int) -> str:
        return f"user {n} v1"

    assert user(1) == "user 1 v1" and cache.set("plain", "old") and cache.set("kept", "kept")
    private_redis.freeze()
    try:
        cache.delete("plain")  # times out: the circuit opens, the delete is kept
        assert user.invalidate(1) is False  # type: ignore[attr-defined]  # circuit open
        assert cache._breaker.pending == 2
        assert cache.get("plain") is None  # reads skip the backend meanwhile
    finally:
        private_redis.thaw()
    _back(cache)
    assert cache.get("plain") is None  # the old value is not served after recovery
    assert cache.get(user.key(1)) is None  # type: ignore[attr-defined]
    assert cache.get("kept") == "kept"  # and nothing else was touched


def test_invalidations_survive_a_killed_and_restarted_redis() -> None:
    # an append-only file fsynced on every write: the restarted server has the old entries
    server = RedisServer(extra_args=("--appendonly", "yes", "--appendfsync", "always"))
    cache = Cache(server.url, prefix=unique_prefix(), timeout=0.2, retry_interval=0.05)
    try:
        cache.set("a", "old")
        cache.set("b", "old", tags=("group",))
        cache.set("c", "old")
        cache.set("kept", "kept")

        @cache.invalidates(key="c")
        def remove_c() -> None:
            pass

        server.kill()
        cache.delete("a")  # refused connection: the circuit opens, the delete is kept
        assert cache.invalidate_tags("group") == 0
        remove_c()
        assert cache.set("kept", "new") is False  # a write that did not land ...
        server.start()
        _back(cache)
        assert [cache.get(k) for k in ("a", "b", "c")] == [None, None, None]
        assert cache.get("kept") is None  # ... does not leave the older value to be served
    finally:
        cache.close()
        server.stop()


async def test_async_invalidations_during_an_outage_are_replayed(
    private_redis: RedisServer, cache: Cache
) -> None:
    await cache.aset("k", "old")
    await cache.aset("t", "old", tags=("tag",))
    private_redis.freeze()
    try:
        await cache.adelete("k")
        await cache.ainvalidate_tags("tag")
        assert cache._breaker.pending == 2
    finally:
        private_redis.thaw()
    for _ in range(500):
        if cache.stats()["circuit"] == "closed":
            break
        await asyncio.sleep(0.01)  # the breaker's probe thread: nothing to await on
    assert await cache.aget("k") is None and await cache.aget("t") is None


def test_too_many_pending_invalidations_clear_the_namespace(
    private_redis: RedisServer, cache: Cache, monkeypatch: pytest.MonkeyPatch
) -> None:
    import cachekit.core.breaker

    monkeypatch.setattr(cachekit.core.breaker, "MAX_PENDING_KEYS", 3)
    for name in ("a", "b", "c", "d", "e", "other"):
        cache.set(name, "old")
    other = Cache(private_redis.url, prefix=unique_prefix())
    other.set("x", "another namespace")
    private_redis.freeze()
    try:
        for name in ("a", "b", "c", "d", "e"):
            cache.delete(name)
    finally:
        private_redis.thaw()
    _back(cache)
    assert cache.get("other") is None  # more than could be remembered: all of it went
    assert other.get("x") == "another namespace"  # never another namespace
    other.close()


def test_raise_mode_delete_during_an_outage_raises_and_is_still_replayed(
    private_redis: RedisServer,
) -> None:
    cache = Cache(private_redis.url, prefix=unique_prefix(), timeout=0.2, on_error="raise",
                  retry_interval=0.05)  # fmt: skip
    cache.set("k", "old")
    private_redis.freeze()
    try:
        with pytest.raises(BackendError):
            cache.get("other")  # times out: the circuit opens
        with pytest.raises(BackendError):
            cache.delete("k")  # not sent at all (a frozen server would run it on thaw)
        assert cache._breaker.pending == 1
    finally:
        private_redis.thaw()
    _back(cache)
    assert cache.get("k") is None
    cache.close()
