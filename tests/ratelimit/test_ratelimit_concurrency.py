"""Exactly N admitted of M concurrent attempts, for each algorithm: threads, asyncio tasks,
and 4 processes whose clocks are skewed by up to ±2 s (the Redis server's clock decides:
the processes' time functions are monkeypatched and nothing changes)."""

from __future__ import annotations

import asyncio
import multiprocessing
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from cachekit import Cache
from cachekit.testing.servers import RedisServer

ALGORITHMS = ["gcra", "sliding", "fixed"]
N, M = 25, 100  # the limit, the attempts
RATE = f"{N}/hour"  # nothing refills while a test runs


def _prefix() -> str:
    return f"rl{uuid.uuid4().hex[:10]}"


@pytest.fixture(params=["redis", "memory"])
def cache(request: pytest.FixtureRequest) -> Any:
    if request.param == "redis":
        cache = Cache(request.getfixturevalue("redis_url"), prefix=_prefix())
    else:
        cache = Cache("memory://", prefix=_prefix())
    yield cache
    cache.close()


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_threads_admit_exactly_n(cache: Cache, algorithm: str) -> None:
    limiter = cache.rate_limiter("threads", rate=RATE, algorithm=algorithm)
    start = threading.Barrier(8)

    def attempts(count: int) -> int:
        start.wait()
        return sum(limiter.hit("user:1").allowed for _ in range(count))

    with ThreadPoolExecutor(8) as pool:
        admitted = sum(pool.map(attempts, [M // 8 + (i < M % 8) for i in range(8)]))
    assert admitted == N
    assert not limiter.peek("user:1").allowed
    assert limiter.peek("user:2").remaining == N  # another identity is untouched


@pytest.mark.parametrize("algorithm", ALGORITHMS)
async def test_tasks_admit_exactly_n(cache: Cache, algorithm: str) -> None:
    limiter = cache.rate_limiter("tasks", rate=RATE, algorithm=algorithm)
    decisions = await asyncio.gather(*(limiter.ahit("user:1") for _ in range(M)))
    assert sum(d.allowed for d in decisions) == N
    # each admitted hit saw a distinct remaining count: no two took the same unit
    assert sorted(d.remaining for d in decisions if d.allowed) == list(range(N))


@pytest.mark.parametrize("algorithm", ALGORITHMS)
async def test_costs_add_up_concurrently(cache: Cache, algorithm: str) -> None:
    limiter = cache.rate_limiter("costs", rate=RATE, algorithm=algorithm)
    decisions = await asyncio.gather(*(limiter.ahit("u", cost=3) for _ in range(M)))
    assert sum(d.allowed for d in decisions) == N // 3
    assert limiter.peek("u").remaining == N - 3 * (N // 3)


def _skewed_worker(
    url: str, prefix: str, skew: float, ready: Any, go: dict[str, Any], results: Any
) -> None:
    """A process whose clocks all read ``skew`` seconds off; for each algorithm in turn it
    says it is ready, waits for the start, and hits."""
    real_time, real_monotonic = time.time, time.monotonic
    real_time_ns, real_monotonic_ns = time.time_ns, time.monotonic_ns
    time.time = lambda: real_time() + skew  # type: ignore[assignment]
    time.monotonic = lambda: real_monotonic() + skew  # type: ignore[assignment]
    time.time_ns = lambda: real_time_ns() + int(skew * 1e9)  # type: ignore[assignment]
    time.monotonic_ns = lambda: real_monotonic_ns() + int(skew * 1e9)  # type: ignore[assignment]
    cache = Cache(url, prefix=prefix, timeout=5.0)
    assert cache.ping()  # connected before any start
    for algorithm in ALGORITHMS:
        limiter = cache.rate_limiter("processes", rate=RATE, algorithm=algorithm)
        window = cache.rate_limiter("window", rate="3/2s", algorithm=algorithm)
        ready.put((algorithm, skew))
        go[algorithm].wait(60)
        admitted = sum(limiter.hit("user:1").allowed for _ in range(M // 4))
        # the short window, spent by the parent just before: still spent on the server's clock
        results.put((algorithm, skew, admitted, window.hit("shared").allowed))
    cache.close()


@pytest.mark.slow  # 4 spawned interpreters
def test_processes_with_skewed_clocks_admit_exactly_n(redis_server: RedisServer) -> None:
    """4 processes, clocks skewed by -2, -0.7, +0.9 and +2 s, M/4 attempts each at once:
    exactly N admitted in all, for each algorithm."""
    prefix = _prefix()
    context = multiprocessing.get_context("spawn")  # no fork of a threaded process
    ready, results = context.Queue(), context.Queue()
    go = {algorithm: context.Event() for algorithm in ALGORITHMS}
    skews = [-2.0, -0.7, 0.9, 2.0]
    workers = [
        context.Process(
            target=_skewed_worker, args=(redis_server.url, prefix, skew, ready, go, results)
        )
        for skew in skews
    ]
    for worker in workers:
        worker.start()
    try:
        with Cache(redis_server.url, prefix=prefix) as cache:
            for algorithm in ALGORITHMS:
                assert sorted(ready.get(timeout=60) for _ in workers) == [
                    (algorithm, skew) for skew in skews
                ]
                # all ready: the short window's 3 units are spent on the server's clock
                window = cache.rate_limiter("window", rate="3/2s", algorithm=algorithm)
                assert all(window.hit("shared").allowed for _ in range(3))
                go[algorithm].set()
                got = [results.get(timeout=60) for _ in workers]
                assert {a for a, _, _, _ in got} == {algorithm}
                assert sum(admitted for _, _, admitted, _ in got) == N, algorithm
                # on the server's clock the 2 s window is still spent (the workers ask well
                # within it); a limiter on the client's clock would have seen it over in
                # the process 2 s ahead
                assert [allowed for _, _, _, allowed in got] == [False] * 4, algorithm
    finally:
        for worker in workers:
            worker.join(30)
    assert [worker.exitcode for worker in workers] == [0] * 4
