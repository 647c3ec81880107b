"""Stampede protection against memory, redis-server and fakeredis, sync and async."""

from __future__ import annotations

import asyncio
import multiprocessing
import threading
import time
from typing import Any

import redis

from cachekit import Cache
from cachekit.testing.servers import RedisServer


class Boom(Exception):
    pass


def test_32_threads_on_a_cold_key_compute_once(any_cache: Cache) -> None:
    calls = 0
    start = threading.Barrier(32)

    @any_cache.cached(ttl=30, lock=True)
    def slow(x: int) -> dict[str, int]:
        nonlocal calls
        calls += 1
        time.sleep(0.05)  # the work itself
        return {"x": x}

    results: list[Any] = []

    def call() -> None:
        start.wait()
        results.append(slow(7))

    threads = [threading.Thread(target=call) for _ in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert calls == 1
    assert results == [{"x": 7}] * 32
    assert slow(7) == {"x": 7} and calls == 1


async def test_100_tasks_on_a_cold_key_compute_once(any_cache: Cache) -> None:
    calls = 0

    @any_cache.cached(ttl=30, lock=True)
    async def slow(x: int) -> list[int]:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.05)
        return [x]

    results = await asyncio.gather(*(slow(3) for _ in range(100)))
    assert calls == 1
    assert results == [[3]] * 100


async def test_loader_raising_reaches_every_waiter_and_releases_the_lock(
    any_cache: Cache,
) -> None:
    calls = 0

    async def failing() -> int:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.02)
        raise Boom("db down")

    outcomes = await asyncio.gather(
        *(any_cache.aget_or_set("k", failing, 30, lock=True) for _ in range(20)),
        return_exceptions=True,
    )
    assert calls == 1
    assert all(isinstance(o, Boom) for o in outcomes)
    assert not await any_cache.lock("k").alocked()  # the stampede lock of "k" is free
    assert await any_cache.aget_or_set("k", lambda: 5, 30, lock=True) == 5


def test_loader_raising_in_threads_with_stale_if_error(any_cache: Cache) -> None:
    calls = 0
    fail = False
    start = threading.Barrier(8)

    @any_cache.cached(ttl=0.2, lock=True, stale_if_error=30)
    def load() -> str:
        nonlocal calls
        calls += 1
        if fail:
            time.sleep(0.02)
            raise Boom("db down")
        return "v1"

    assert load() == "v1"
    time.sleep(0.25)  # let the entry expire logically (kept for stale_if_error)
    fail = True
    results: list[Any] = []

    def call() -> None:
        start.wait()
        try:
            results.append(load())
        except Boom as exc:
            results.append(exc)

    threads = [threading.Thread(target=call) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == ["v1"] * 8
    assert calls == 2
    assert not any_cache.lock(load.key()).locked()  # type: ignore[attr-defined]


def test_stale_ttl_serves_stale_while_one_background_refresh_runs(any_cache: Cache) -> None:
    version = 0
    refreshed = threading.Event()
    release = threading.Event()

    @any_cache.cached(ttl=0.2, stale_ttl=30)
    def config() -> int:
        nonlocal version
        version += 1
        if version > 1:
            release.wait(5)
            refreshed.set()
        return version

    assert config() == 1
    time.sleep(0.25)  # logically expired, inside stale_ttl
    started = time.monotonic()
    assert [config() for _ in range(20)] == [1] * 20  # stale, no waiting
    assert time.monotonic() - started < 0.2
    assert any_cache.stats()["stale"] == 20
    release.set()
    assert refreshed.wait(5)
    deadline = time.monotonic() + 5
    while config() != 2 and time.monotonic() < deadline:
        time.sleep(0.01)  # the refresh thread stores after returning; no event to wait on
    assert config() == 2
    assert version == 2  # exactly one background refresh


async def test_async_stale_ttl_refreshes_in_a_task(any_cache: Cache) -> None:
    calls = 0
    release = asyncio.Event()

    @any_cache.cached(ttl=0.2, stale_ttl=30)
    async def config() -> int:
        nonlocal calls
        calls += 1
        if calls > 1:
            await release.wait()
        return calls

    assert await config() == 1
    await asyncio.sleep(0.25)
    assert await asyncio.gather(*(config() for _ in range(10))) == [1] * 10
    release.set()
    for _ in range(100):
        if await config() == 2:
            break
        await asyncio.sleep(0.01)  # the task stores after returning; no event to wait on
    assert await config() == 2 and calls == 2


def test_early_refresh_recomputes_before_expiry(any_cache: Cache) -> None:
    calls = 0
    refreshed = threading.Event()

    @any_cache.cached(ttl=5, early_refresh=1e4)  # delta * beta >> ttl: always "early"
    def value() -> int:
        nonlocal calls
        calls += 1
        time.sleep(0.01)  # XFetch weighs by the measured compute time
        if calls > 1:
            refreshed.set()
        return calls

    assert value() == 1
    # XFetch draws at random: with delta * beta >> ttl each hit refreshes with p > 0.95,
    # so a few hits make it all but certain; every one is served without waiting
    for _ in range(40):
        assert value() >= 1
        if refreshed.wait(0.25):
            break
    assert refreshed.is_set()
    meta = _meta(any_cache, value.key())  # type: ignore[attr-defined]
    assert meta is not None and meta["x"] > time.time() and "d" in meta


def _meta(cache: Cache, key: str) -> dict[str, Any] | None:
    stored = cache._backend.get(cache.make_key(key))
    return cache._codec.loads_meta(stored)[1]


def test_wrapper_is_chosen_at_decoration(any_cache: Cache) -> None:
    @any_cache.cached(ttl=5)
    def plain(x: int) -> int:
        return x

    @any_cache.cached(ttl=5, lock=True)
    def locked(x: int) -> int:
        return x

    assert plain(1) == 1 and locked(1) == 1
    assert _meta(any_cache, plain.key(1)) is None  # type: ignore[attr-defined]
    assert "stampede" not in plain.__code__.co_qualname  # the plain, cheap hit path
    assert "stampede" in locked.__code__.co_qualname


def test_crashed_holder_lock_expires_and_a_waiter_takes_over(redis_url: str) -> None:
    cache = Cache(redis_url, prefix="crash")
    dead = cache.lock("report", ttl=0.5)
    assert dead.acquire()  # a holder that will never finish or release
    started = time.monotonic()
    assert cache.get_or_set("report", lambda: "done", 30, lock=True, lock_timeout=5) == "done"
    assert 0.3 < time.monotonic() - started < 2.0
    cache.clear()
    cache.close()


def test_waiter_in_another_process_is_woken_not_polling(redis_url: str) -> None:
    # two Cache objects: no shared in-process flight, so the second one waits on Redis
    holder, waiter = Cache(redis_url, prefix="wake"), Cache(redis_url, prefix="wake")
    entered = threading.Event()
    finish = threading.Event()

    def slow() -> str:
        entered.set()
        finish.wait(5)
        return "value"

    thread = threading.Thread(target=lambda: holder.get_or_set("w", slow, 30, lock=True))
    thread.start()
    assert entered.wait(5)
    result: list[Any] = []
    waiting = threading.Thread(
        target=lambda: result.append(waiter.get_or_set("w", lambda: "other", 30, lock=True))
    )
    waiting.start()
    time.sleep(0.3)  # let the waiter block in Redis for a while (what is measured next)
    released = time.monotonic()
    finish.set()
    waiting.join()
    woke_after = time.monotonic() - released
    thread.join()
    assert result == ["value"]
    assert woke_after < 0.1  # woken by the holder's push, not at a polling interval
    holder.clear()
    holder.close()
    waiter.close()


def _process_main(url: str, go: Any, out: Any) -> None:
    cache = Cache(url, prefix="procs")
    counter = redis.Redis.from_url(url)

    @cache.cached(ttl=30, key="shared", lock=True)
    def compute() -> str:
        counter.incr("procs-calls")
        time.sleep(0.2)
        return "result"

    go.wait()
    results: list[str] = []
    threads = [threading.Thread(target=lambda: results.append(compute())) for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out.put(results)


def test_4_processes_sharing_one_redis_compute_once(private_redis: RedisServer) -> None:
    ctx = multiprocessing.get_context("spawn")
    go = ctx.Event()
    out = ctx.Queue()
    procs = [ctx.Process(target=_process_main, args=(private_redis.url, go, out)) for _ in range(4)]
    for p in procs:
        p.start()
    time.sleep(1.0)  # let the spawned interpreters import; a late one would just hit
    go.set()
    results = [out.get(timeout=30) for _ in procs]
    for p in procs:
        p.join(10)
    assert results == [["result"] * 5] * 4
    assert int(redis.Redis.from_url(private_redis.url).get("procs-calls") or 0) == 1
    out.close()
    out.join_thread()


async def test_stale_read_from_before_a_refresh_landed_starts_no_second_refresh() -> None:
    """The race: a caller reads the stale entry, a background refresh then stores the new
    value and finishes, and only then does the caller decide about refreshing. It must
    not start another refresh of what was just stored."""
    cache = Cache("memory://", serializer="orjson")
    calls = 0
    release = asyncio.Event()

    @cache.cached(ttl=0.2, stale_ttl=30)
    async def config() -> int:
        nonlocal calls
        calls += 1
        if calls > 1:
            await release.wait()
        return calls

    assert await config() == 1
    await asyncio.sleep(0.25)  # the clock itself: the entry is now logically stale
    assert await config() == 1  # serves stale, starts refresh #2 (held by `release`)

    read_done, gate = asyncio.Event(), asyncio.Event()
    original = cache._alookup_meta

    async def read_then_wait(key: str) -> Any:
        found = await original(key)  # the stale entry, read before the refresh lands
        read_done.set()
        await gate.wait()
        return found

    cache._alookup_meta = read_then_wait  # type: ignore[method-assign]
    late = asyncio.ensure_future(config())
    await read_done.wait()
    cache._alookup_meta = original  # type: ignore[method-assign]
    release.set()
    for _ in range(200):  # until refresh #2 has stored and finished
        if await cache.aget(config.key()) == 2:
            break
        await asyncio.sleep(0.005)
    for _ in range(20):
        await asyncio.sleep(0)  # let the refresh task run its cleanup
    gate.set()
    assert await late == 1  # what it read: the stale value
    for _ in range(20):
        await asyncio.sleep(0)
    assert calls == 2  # no refresh #3


# -- a leader's interruption is its own (issue 8) ---------------------------------------
async def test_cancelled_leader_hands_over_to_a_follower(any_cache: Cache) -> None:
    """A leader cancelled mid-computation (``wait_for`` timeout, client disconnect) must
    not cancel its followers: one of them computes, all get the value."""
    calls = 0
    leading = asyncio.Event()

    async def load() -> str:
        nonlocal calls
        calls += 1
        if calls == 1:
            leading.set()
            await asyncio.Event().wait()  # the first leader never finishes: it is cancelled
        return "value"

    leader = asyncio.ensure_future(any_cache.aget_or_set("k", load, 30, lock=True))
    await leading.wait()
    followers = [
        asyncio.ensure_future(any_cache.aget_or_set("k", load, 30, lock=True)) for _ in range(5)
    ]
    for _ in range(20):
        await asyncio.sleep(0)  # the followers reach the flight and wait on it
    leader.cancel()
    results = await asyncio.gather(*followers, return_exceptions=True)
    assert results == ["value"] * 5
    assert calls == 2  # the cancelled leader's, and one follower's that took over
    assert leader.cancelled()
    assert await any_cache.aget("k") == "value"


async def test_wait_for_timeout_on_the_leader_spares_the_followers() -> None:
    cache = Cache("memory://")
    release = asyncio.Event()
    calls = 0

    @cache.cached(ttl=30, lock=True)
    async def load() -> int:
        nonlocal calls
        calls += 1
        if calls == 1:
            await asyncio.Event().wait()
        await release.wait()
        return 7

    leader = asyncio.ensure_future(asyncio.wait_for(load(), 0.05))
    await asyncio.sleep(0)
    follower = asyncio.ensure_future(load())
    try:
        await leader
    except asyncio.TimeoutError:
        pass
    release.set()
    assert await follower == 7 and calls == 2


class Interrupt(BaseException):
    """Like KeyboardInterrupt: not the function's answer, the thread's own fate."""


def test_interrupted_leader_thread_hands_over_to_a_follower(any_cache: Cache) -> None:
    calls = 0
    leading, go = threading.Event(), threading.Event()

    @any_cache.cached(ttl=30, lock=True)
    def load() -> str:
        nonlocal calls
        calls += 1
        if calls == 1:
            leading.set()
            go.wait(5)
            raise Interrupt
        return "value"

    outcomes: list[Any] = []

    def call() -> None:
        try:
            outcomes.append(load())
        except BaseException as exc:  # recorded for the assertion
            outcomes.append(exc)

    first = threading.Thread(target=call)
    first.start()
    assert leading.wait(5)
    others = [threading.Thread(target=call) for _ in range(4)]
    for t in others:
        t.start()
    time.sleep(0.1)  # let the followers block on the flight (what is tested)
    go.set()
    for t in [first, *others]:
        t.join(10)
    assert sum(isinstance(o, Interrupt) for o in outcomes) == 1  # only the leader's own
    assert sorted(o for o in outcomes if isinstance(o, str)) == ["value"] * 4
    assert calls == 2


# -- background refreshes go through one bounded pool (issue 8) -------------------------
def test_300_stale_keys_refresh_on_a_bounded_pool(any_cache: Cache) -> None:
    from collections import Counter

    counts: Counter[int] = Counter()
    gate = threading.Event()

    @any_cache.cached(ttl=0.3, stale_ttl=60)
    def load(n: int) -> int:
        counts[n] += 1
        if counts[n] > 1:
            gate.wait(10)  # refreshes pile up while the first ones are held
        return counts[n]

    assert [load(n) for n in range(300)] == [1] * 300
    time.sleep(0.35)  # logically expired, inside stale_ttl
    before = threading.active_count()
    assert [load(n) for n in range(300)] == [1] * 300  # stale, each starts a refresh
    assert [load(n) for n in range(300)] == [1] * 300  # already queued: no second one
    assert threading.active_count() - before <= 4
    gate.set()
    deadline = time.monotonic() + 20
    # polling the pool's progress (no calls meanwhile: a refreshed entry turns stale again
    # after its 0.3 s and a call would then rightly start another refresh)
    while time.monotonic() < deadline and (
        min(counts.values()) < 2 or threading.active_count() > before
    ):
        time.sleep(0.02)
    assert set(counts.values()) == {2}  # every key refreshed exactly once


async def test_async_stale_refreshes_are_bounded_tasks() -> None:
    cache = Cache("memory://")
    running = 0
    peak = 0
    calls: dict[int, int] = {}
    gate = asyncio.Event()

    @cache.cached(ttl=0.2, stale_ttl=60)
    async def load(n: int) -> int:
        nonlocal running, peak
        calls[n] = calls.get(n, 0) + 1
        if calls[n] > 1:
            running += 1
            peak = max(peak, running)
            await gate.wait()
            running -= 1
        return calls[n]

    assert [await load(n) for n in range(300)] == [1] * 300
    await asyncio.sleep(0.25)
    tasks_before = len(asyncio.all_tasks())
    assert [await load(n) for n in range(300)] == [1] * 300
    assert len(asyncio.all_tasks()) - tasks_before <= 4
    gate.set()
    for _ in range(500):
        if all(calls[n] == 2 for n in range(300)):
            break
        await asyncio.sleep(0.01)
    assert set(calls.values()) == {2} and peak <= 4
