"""Leases: a load that started before an invalidation never stores (issue 8, stale
write-back), on memory, redis-server and fakeredis, sync and async."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

from cachekit import Cache
from cachekit.leases.rules import MARK_LIFETIME, LocalMarks

from conftest import unique_prefix

# every way a load stores: plain, locked, with metadata (stale_ttl), tagged, tagged + lock
LOADS = [
    {},
    {"lock": True},
    {"stale_ttl": 30},
    {"tags": ("things",)},
    {"lock": True, "tags": ("things",)},
    {"lock": True, "stale_ttl": 30},
]
LOAD_IDS = ["plain", "lock", "stale_ttl", "tags", "lock+tags", "lock+stale_ttl"]


def _invalidate(cache: Cache, load: Any, how: str) -> None:
    if how == "invalidate":
        assert load.invalidate() is False  # nothing stored yet: the load is still running
    elif how == "delete":
        cache.delete(load.key())
    else:
        cache.invalidate_tags("things")


def _assert_caches_again(load: Any, calls: Any) -> None:
    """Loads that start well after the invalidation store again. (Time passing, not
    synchronisation: a load that starts within about a round trip of an invalidation
    may have read the source before the write, and is not kept.)"""
    time.sleep(0.02)
    assert load() == "new"
    settled = calls()
    assert load() == "new" and calls() == settled


@pytest.mark.parametrize("options", LOADS, ids=LOAD_IDS)
@pytest.mark.parametrize("how", ["invalidate", "delete", "tags"])
def test_an_invalidation_during_a_load_wins(any_cache: Cache, options: Any, how: str) -> None:
    if how == "tags" and "tags" not in options:
        pytest.skip("only tagged entries are invalidated by tag")
    db = {"row": "old"}
    read, invalidated = threading.Event(), threading.Event()
    calls = 0

    @any_cache.cached(ttl=60, **options)
    def load() -> str:
        nonlocal calls
        calls += 1
        row = db["row"]  # the load reads the source ...
        read.set()
        invalidated.wait(5)  # ... and the writer updates it and invalidates meanwhile
        return row

    results: list[str] = []
    loader = threading.Thread(target=lambda: results.append(load()))
    loader.start()
    assert read.wait(5)
    db["row"] = "new"
    _invalidate(any_cache, load, how)
    invalidated.set()
    loader.join(10)
    assert results == ["old"]  # what it read: that call overlapped the update
    assert load() == "new"  # but it was not stored: the next call loads again
    _assert_caches_again(load, lambda: calls)


@pytest.mark.parametrize("options", LOADS, ids=LOAD_IDS)
async def test_async_an_invalidation_during_a_load_wins(any_cache: Cache, options: Any) -> None:
    db = {"row": "old"}
    read, invalidated = asyncio.Event(), asyncio.Event()
    calls = 0

    @any_cache.cached(ttl=60, **options)
    async def load() -> str:
        nonlocal calls
        calls += 1
        row = db["row"]
        read.set()
        await invalidated.wait()
        return row

    loading = asyncio.ensure_future(load())
    await read.wait()
    db["row"] = "new"
    await load.ainvalidate()  # type: ignore[attr-defined]
    invalidated.set()
    assert await loading == "old"
    assert await load() == "new"
    await asyncio.sleep(0.02)  # see _assert_caches_again
    assert await load() == "new"
    settled = calls
    assert await load() == "new" and calls == settled


def test_get_or_set_and_write_through_loads_take_leases(any_cache: Cache) -> None:
    db = {"row": "old"}
    read, invalidated = threading.Event(), threading.Event()

    def loader(*_: Any) -> str:
        row = db["row"]
        read.set()
        invalidated.wait(5)
        return row

    for name, load, drop in [
        ("gos", lambda: any_cache.get_or_set("gos", lambda: loader(), 60), "gos"),
        (
            "wt",
            lambda: any_cache.write_through(key="wt:{}", load=loader, store=lambda *a: None).get(1),
            "wt:1",
        ),
    ]:
        db["row"] = "old"
        read.clear()
        invalidated.clear()
        thread = threading.Thread(target=load)
        thread.start()
        assert read.wait(5), name
        db["row"] = "new"
        any_cache.delete(drop)
        invalidated.set()
        thread.join(10)
        assert any_cache.get(drop) is None, name  # the old row was not stored


def test_invalidate_then_load_still_caches(any_cache: Cache) -> None:
    """The guard must not refuse the store of a load that started after the
    invalidation (the mark is younger than nothing that started later)."""
    calls = 0

    @any_cache.cached(ttl=60)
    def load() -> int:
        nonlocal calls
        calls += 1
        return calls

    assert load() == 1
    load.invalidate()  # type: ignore[attr-defined]
    # time passing, not synchronisation: a load that starts within one round trip of the
    # invalidation is ambiguous (it may have read the source before the write) and is
    # not kept; one that starts later is
    time.sleep(0.02)
    assert load() == 2
    assert load() == 2  # stored
    any_cache.delete(load.key())  # type: ignore[attr-defined]
    time.sleep(0.02)
    assert load() == 3 and load() == 3


def test_holder_slower_than_its_lock_ttl_does_not_overwrite(redis_url: str) -> None:
    """Process A's lock expires while it computes; B takes the lock and stores a newer
    value; A finishing later must not overwrite it (its token is no longer the lock's)."""
    prefix = unique_prefix()
    a, b = Cache(redis_url, prefix=prefix), Cache(redis_url, prefix=prefix)
    entered, finish = threading.Event(), threading.Event()

    def slow() -> str:
        entered.set()
        finish.wait(5)
        return "old"

    holder = threading.Thread(target=lambda: a.get_or_set("k", slow, 60, lock=True, lock_ttl=0.3))
    holder.start()
    assert entered.wait(5)
    deadline = time.monotonic() + 5
    while b.lock("k").locked() and time.monotonic() < deadline:
        time.sleep(0.02)  # A's lock running out on the server's clock: nothing to wait on
    assert b.get_or_set("k", lambda: "new", 60, lock=True) == "new"
    finish.set()
    holder.join(10)
    assert b.get("k") == "new"
    assert not b.lock("k").locked()
    b.clear()
    a.close()
    b.close()


def test_memory_leader_overtaken_by_a_waiter_does_not_overwrite() -> None:
    cache = Cache("memory://")
    entered, finish = threading.Event(), threading.Event()
    calls = 0

    def compute() -> str:
        nonlocal calls
        calls += 1
        if calls == 1:
            entered.set()
            finish.wait(5)
            return "old"
        return "new"

    def call() -> str:
        return str(cache.get_or_set("k", compute, 60, lock=True, lock_ttl=0.2))

    leader = threading.Thread(target=call)
    leader.start()
    assert entered.wait(5)
    assert call() == "new"  # waited lock_ttl, then computed itself
    finish.set()
    leader.join(10)
    assert cache.get("k") == "new"


# -- the in-process marks, pure ----------------------------------------------------------
def test_local_marks_refuse_loads_older_than_the_invalidation() -> None:
    now = [100.0]
    marks = LocalMarks(clock=lambda: now[0])
    assert marks.allows("k", 99.0)
    deleted = marks.revoke(["k"], lambda: 1)
    assert deleted == 1
    assert not marks.allows("k", 99.0)  # started before the invalidation
    assert not marks.allows("k", 100.0)  # the same instant: the safe side
    assert marks.allows("k", 100.5)  # started after
    assert marks.allows("other", 99.0)
    now[0] = 100.0 + MARK_LIFETIME + 1
    assert not marks.allows("k", 100.5)  # older than any mark is kept: cannot know
    assert marks.store("k", 100.0, lambda: "stored", "refused") == "refused"
    assert marks.store("k", now[0] - 1, lambda: "stored", "refused") == "stored"


def test_a_call_after_an_invalidation_does_not_join_an_older_computation(
    any_cache: Cache,
) -> None:
    """Single flight must not hand a computation that began before an invalidation to a
    caller that came after it (it would return what was just invalidated)."""
    db = {"row": "old"}
    read, go = threading.Event(), threading.Event()
    calls = 0

    @any_cache.cached(ttl=60, lock=True)
    def load() -> str:
        nonlocal calls
        calls += 1
        row = db["row"]
        if calls == 1:
            read.set()
            go.wait(5)
        return row

    first: list[str] = []
    before = threading.Thread(target=lambda: first.append(load()))
    before.start()
    assert read.wait(5)
    db["row"] = "new"
    load.invalidate()  # type: ignore[attr-defined]
    after: list[str] = []
    late = threading.Thread(target=lambda: after.append(load()))
    late.start()
    time.sleep(0.1)  # let the late caller reach the flight table (what is tested)
    go.set()
    before.join(10)
    late.join(10)
    assert first == ["old"] and after == ["new"]
    assert load() == "new"


async def test_async_a_call_after_an_invalidation_does_not_join_an_older_one(
    any_cache: Cache,
) -> None:
    db = {"row": "old"}
    read, go = asyncio.Event(), asyncio.Event()
    calls = 0

    @any_cache.cached(ttl=60, lock=True)
    async def load() -> str:
        nonlocal calls
        calls += 1
        row = db["row"]
        if calls == 1:
            read.set()
            await go.wait()
        return row

    before = asyncio.ensure_future(load())
    await read.wait()
    db["row"] = "new"
    await load.ainvalidate()  # type: ignore[attr-defined]
    late = asyncio.ensure_future(load())
    for _ in range(20):
        await asyncio.sleep(0)  # the late call reaches the flight table
    go.set()
    assert await before == "old"
    assert await late == "new"


def test_a_waiter_in_another_process_does_not_get_a_revoked_holders_value(
    redis_url: str,
) -> None:
    """Two Cache objects (no shared flight): the waiter that came after the invalidation
    waits on the holder's lock, and must compute itself, not take the holder's value."""
    prefix = unique_prefix()
    holder, waiter = Cache(redis_url, prefix=prefix), Cache(redis_url, prefix=prefix)
    db = {"row": "old"}
    read, go = threading.Event(), threading.Event()

    def slow() -> str:
        row = db["row"]
        read.set()
        go.wait(5)
        return row

    first: list[Any] = []
    thread = threading.Thread(target=lambda: first.append(holder.get_or_set("k", slow, 60, lock=True)))
    thread.start()
    assert read.wait(5)
    db["row"] = "new"
    waiter.delete("k")
    after: list[Any] = []
    late = threading.Thread(
        target=lambda: after.append(waiter.get_or_set("k", lambda: db["row"], 60, lock=True))
    )
    late.start()
    time.sleep(0.2)  # let the late caller block on the holder's wake-up list (what is tested)
    go.set()
    thread.join(10)
    late.join(10)
    assert first == ["old"] and after == ["new"]
    assert waiter.get("k") == "new"
    waiter.clear()
    holder.close()
    waiter.close()


@pytest.mark.parametrize("writer", ["updates", "write_through"])
def test_a_write_through_revokes_the_loads_in_flight(any_cache: Cache, writer: str) -> None:
    """A load that read the source before a write-through must not store over it."""
    db = {"row": "old"}
    read, written = threading.Event(), threading.Event()

    def load_row(*_: Any) -> str:
        row = db["row"]
        read.set()
        written.wait(5)
        return row

    def save_row(*args: Any) -> None:
        db["row"] = args[-1]

    through = any_cache.write_through(key="row:{}", load=load_row, store=save_row)

    @any_cache.updates(key="row:{n}")
    def update(n: int, row: str) -> str:
        save_row(row)
        return row

    loader = threading.Thread(target=lambda: through.get(1))
    loader.start()
    assert read.wait(5)
    if writer == "updates":
        update(1, "new")
    else:
        through.set(1, "new")
    written.set()
    loader.join(10)
    assert any_cache.get("row:1") in ("new", None)  # never the row read before the write
