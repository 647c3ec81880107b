"""cache.lock(): with / async with, owner tokens, timeouts, and a holder that dies."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from cachekit import Cache, LockNotOwnedError, LockTimeoutError
from cachekit.testing.servers import RedisServer


def test_with_excludes_others_and_releases(any_cache: Cache) -> None:
    lock = any_cache.lock("order:1", ttl=5, timeout=0.05)
    with lock:
        assert lock.locked() and lock.owned()
        other = any_cache.lock("order:1", ttl=5)
        assert other.acquire(blocking=False) is False
        with pytest.raises(LockTimeoutError):
            other.acquire(timeout=0.05)
    assert not lock.locked()
    assert any_cache.lock("order:1", ttl=5).acquire(blocking=False)


def test_release_of_a_lock_not_held_raises(any_cache: Cache) -> None:
    lock = any_cache.lock("r", ttl=0.2)
    with pytest.raises(LockNotOwnedError):
        lock.release()
    assert lock.acquire()
    time.sleep(0.3)  # let the TTL run out (that is what is tested)
    thief = any_cache.lock("r", ttl=5)
    assert thief.acquire(blocking=False)
    with pytest.raises(LockNotOwnedError):
        lock.release()  # expired and taken by someone else: not ours to delete
    assert thief.locked()
    with pytest.raises(LockNotOwnedError):
        lock.extend(1)
    thief.release()


def test_extend_keeps_the_lock(any_cache: Cache) -> None:
    lock = any_cache.lock("e", ttl=0.3)
    lock.acquire()
    lock.extend(5, replace_ttl=True)
    time.sleep(0.4)  # past the original TTL
    assert lock.owned()
    assert any_cache.lock("e", ttl=1).acquire(blocking=False) is False
    lock.release()


def test_waiter_is_woken_by_release(any_cache: Cache) -> None:
    holder = any_cache.lock("w", ttl=10)
    holder.acquire()
    got = threading.Event()

    def wait() -> None:
        with any_cache.lock("w", ttl=10, timeout=5):
            got.set()

    thread = threading.Thread(target=wait)
    thread.start()
    assert not got.wait(0.1)
    holder.release()
    assert got.wait(2)
    thread.join()


async def test_async_with_and_twins(any_cache: Cache) -> None:
    lock = any_cache.lock("a", ttl=5, timeout=0.05)
    async with lock:
        assert await lock.alocked() and await lock.aowned()
        other = any_cache.lock("a", ttl=5)
        assert await other.aacquire(blocking=False) is False
        with pytest.raises(LockTimeoutError):
            await other.aacquire(timeout=0.05)
        assert await lock.aextend(1)
    assert not await lock.alocked()
    with pytest.raises(LockNotOwnedError):
        await lock.arelease()


async def test_async_tasks_take_turns(any_cache: Cache) -> None:
    inside = 0
    most = 0

    async def critical() -> None:
        nonlocal inside, most
        async with any_cache.lock("turns", ttl=5, timeout=5):
            inside += 1
            most = max(most, inside)
            await asyncio.sleep(0.01)
            inside -= 1

    await asyncio.gather(*(critical() for _ in range(8)))
    assert most == 1


def test_memory_waiter_wakes_at_the_holders_ttl() -> None:
    cache = Cache("memory://")
    cache.lock("t", ttl=0.2).acquire()  # never released
    started = time.monotonic()
    with cache.lock("t", ttl=1, timeout=2):
        waited = time.monotonic() - started
    assert 0.15 <= waited < 1.0


def test_lock_key_is_namespaced_and_in_the_entrys_slot(redis_url: str) -> None:
    cache = Cache(redis_url, prefix="lockns")
    lock = cache.lock("order:7", ttl=5)
    assert lock.key == "#lockns:1:lock:{lockns:1:order:7}"
    with lock:
        import redis

        assert redis.Redis.from_url(redis_url).get(lock.key) == lock.token
    cache.close()


HOLDER = """
import sys, time
from cachekit import Cache
cache = Cache(sys.argv[1], prefix=sys.argv[2])
lock = cache.lock("job", ttl=float(sys.argv[3]))
lock.acquire()
print("held", flush=True)
time.sleep(60)
"""


def test_killed_holder_loses_the_lock_after_its_ttl(private_redis: RedisServer) -> None:
    ttl = 1.0
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, private_redis.url, "killed", str(ttl)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        killed_at = time.monotonic()
        cache = Cache(private_redis.url, prefix="killed")
        lock = cache.lock("job", ttl=5)
        assert lock.acquire(blocking=False) is False  # the dead holder's TTL still runs
        assert lock.acquire(timeout=5)
        assert time.monotonic() - killed_at < ttl + 0.5
        lock.release()
        cache.close()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        assert proc.stdout is not None
        proc.stdout.close()


@pytest.mark.parametrize("timeout", [0.3, 0.12])
async def test_timeout_waits_the_whole_timeout(any_cache: Cache, timeout: float) -> None:
    # redis-py's Lock stops when its next poll would land past blocking_timeout: on Redis,
    # lock(timeout=0.3) used to give up after ~0.25 s
    holder = any_cache.lock("busy", ttl=10)
    holder.acquire()
    try:
        started = time.monotonic()
        with pytest.raises(LockTimeoutError):
            any_cache.lock("busy", ttl=10, timeout=timeout).acquire()
        assert timeout <= time.monotonic() - started < timeout + 0.2
        started = time.monotonic()
        with pytest.raises(LockTimeoutError):
            await any_cache.lock("busy", ttl=10, timeout=timeout).aacquire()
        assert timeout <= time.monotonic() - started < timeout + 0.2
    finally:
        holder.release()
