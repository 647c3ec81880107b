#!/usr/bin/env python
"""Stampede: N concurrent callers on one cold key, across processes sharing one Redis.

    python benchmarks/bench_stampede.py [--processes 4] [--callers 25] [--work 0.05]

Each library gets its own fresh redis-server. ``--processes`` spawned processes each start
``--callers`` concurrent callers (asyncio tasks for async libraries, threads for
dogpile.cache) on the same cold key, all released at once by one event; the function
sleeps ``--work`` seconds. Reported: how many times the function ran, the wall time of
the last caller to return as a multiple of ``--work`` (measured from the release), and
the Redis commands the run cost (``total_commands_processed`` delta, from the server).

Peers: dogpile.cache (redis backend, ``distributed_lock=True``), cashews
(``@cache(lock=True)``), aiocache (``cached_stampede``).
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from cachekit.testing.servers import RedisServer  # noqa: E402

KEY = "stampede-key"


# -- one function per library, run inside a spawned process ----------------------------
async def _run_tasks(func: Any, callers: int, go: Any, ready: Any) -> list[float]:
    ends: list[float] = []

    async def one() -> None:
        await func()
        ends.append(time.time())

    ready.put(1)
    await asyncio.get_running_loop().run_in_executor(None, go.wait)
    await asyncio.gather(*(one() for _ in range(callers)))
    return ends


def _run_threads(func: Any, callers: int, go: Any, ready: Any) -> list[float]:
    ends: list[float] = []

    def one() -> None:
        go.wait()
        func()
        ends.append(time.time())

    threads = [threading.Thread(target=one) for _ in range(callers)]
    for t in threads:
        t.start()
    ready.put(1)
    for t in threads:
        t.join()
    return ends


def cachekit_main(
    url: str, work: float, callers: int, calls: Any, go: Any, ready: Any
) -> list[float]:
    from cachekit import Cache

    cache = Cache(url, prefix="bench")

    @cache.cached(ttl=60, key=KEY, lock=True)
    async def compute() -> str:
        with calls.get_lock():
            calls.value += 1
        await asyncio.sleep(work)
        return "value"

    async def main() -> list[float]:
        await cache.aping()  # connect before the release (as the peers' pools do lazily)
        return await _run_tasks(compute, callers, go, ready)

    return asyncio.run(main())


def dogpile_main(
    url: str, work: float, callers: int, calls: Any, go: Any, ready: Any
) -> list[float]:
    from dogpile.cache import make_region

    region = make_region().configure(
        "dogpile.cache.redis",
        expiration_time=60,
        arguments={
            "url": url,
            "distributed_lock": True,
            "thread_local_lock": False,
            "lock_timeout": 30,
            "redis_expiration_time": 60,
        },
    )

    def compute() -> str:
        with calls.get_lock():
            calls.value += 1
        time.sleep(work)
        return "value"

    def get() -> Any:
        return region.get_or_create(KEY, compute)

    region.backend.writer_client.ping()
    return _run_threads(get, callers, go, ready)


def cashews_main(
    url: str, work: float, callers: int, calls: Any, go: Any, ready: Any
) -> list[float]:
    from cashews import Cache

    cache = Cache()
    cache.setup(url)

    @cache(ttl="1m", key=KEY, lock=True)
    async def compute() -> str:
        with calls.get_lock():
            calls.value += 1
        await asyncio.sleep(work)
        return "value"

    async def main() -> list[float]:
        await cache.init()
        await cache.ping()
        return await _run_tasks(compute, callers, go, ready)

    return asyncio.run(main())


def aiocache_main(
    url: str, work: float, callers: int, calls: Any, go: Any, ready: Any
) -> list[float]:
    from aiocache import RedisCache, cached_stampede

    port = int(url.rsplit(":", 1)[1].split("/")[0])

    @cached_stampede(lease=2, ttl=60, key=KEY, cache=RedisCache, endpoint="127.0.0.1", port=port)
    async def compute() -> str:
        with calls.get_lock():
            calls.value += 1
        await asyncio.sleep(work)
        return "value"

    async def main() -> list[float]:
        return await _run_tasks(compute, callers, go, ready)

    return asyncio.run(main())


LIBRARIES = {
    "cachekit (lock=True)": cachekit_main,
    "dogpile.cache (redis, distributed_lock)": dogpile_main,
    "cashews (lock=True)": cashews_main,
    "aiocache (cached_stampede)": aiocache_main,
}


def _child(
    name: str, url: str, work: float, callers: int, calls: Any, go: Any, ready: Any, out: Any
) -> None:
    out.put(LIBRARIES[name](url, work, callers, calls, go, ready))


def _commands(server: RedisServer) -> int:
    import redis

    info = redis.Redis.from_url(server.url).info("stats")
    return int(info["total_commands_processed"])


def run(name: str, processes: int, callers: int, work: float) -> tuple[int, float, int]:
    ctx = multiprocessing.get_context("spawn")
    with RedisServer() as server:
        calls = ctx.Value("i", 0)
        go, ready, out = ctx.Event(), ctx.Queue(), ctx.Queue()
        procs = [
            ctx.Process(
                target=_child, args=(name, server.url, work, callers, calls, go, ready, out)
            )
            for _ in range(processes)
        ]
        for p in procs:
            p.start()
        for _ in procs:
            ready.get(timeout=60)
        time.sleep(0.3)  # every caller is parked on the event (threads start after "ready")
        before = _commands(server)
        released = time.time()
        go.set()
        ends = [t for _ in procs for t in out.get(timeout=120)]
        after = _commands(server)
        for p in procs:
            p.join(30)
        # the INFO call that read "after" is itself counted once
        return calls.value, (max(ends) - released) / work, after - before - 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--callers", type=int, default=25)
    parser.add_argument("--work", type=float, default=0.05)
    parser.add_argument("--only", default="", help="run only libraries whose name contains this")
    args = parser.parse_args()
    print(
        f"{args.processes} processes x {args.callers} callers on one cold key, "
        f"function takes {args.work * 1000:.0f} ms, one redis-server per library\n"
    )
    print(f"{'library':42} {'calls':>6} {'last caller':>12} {'redis cmds':>11}")
    for name in LIBRARIES:
        if args.only and args.only not in name:
            continue
        calls, last, commands = run(name, args.processes, args.callers, args.work)
        print(f"{name:42} {calls:>6} {last:>11.2f}x {commands:>11}", flush=True)


if __name__ == "__main__":
    main()
