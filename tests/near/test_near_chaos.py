"""Chaos: 4 processes (2 sync, 2 asyncio) read and write shared keys through near caches
while the invalidation links are cut, Redis is frozen, and Redis is restarted.

Every write logs ``(key, value, started, ended, ok)`` and every read ``(key, value,
started)`` on the system-wide monotonic clock. The check, per read of a value ``v``: no
write that surely came after ``v``'s (it started after ``v``'s write ended) and surely
happened (it returned True) ended more than ``max_stale`` before the read started. Values
are unique, so each read names its write. The run must also have served from the L1 and
seen the links come back, or it proved nothing.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import random
import time
from pathlib import Path
from typing import Any

import pytest
import redis
from conftest import unique_prefix

from cachekit import Cache
from cachekit.testing.servers import RedisServer

pytestmark = pytest.mark.slow

MAX_STALE = 0.5
KEYS = [f"k{i}" for i in range(8)]
LONGEST = 60.0  # a worker stops when told to, or after this
WRITE_SHARE = 0.05


def _worker(url: str, prefix: str, name: str, use_async: bool, out: str, stop: Any) -> None:
    cache = Cache(url, prefix=prefix, near={"max_stale": MAX_STALE}, timeout=0.2)
    rng = random.Random(name)
    reads: list[tuple[str, Any, float]] = []
    writes: list[tuple[str, str, float, float, bool]] = []
    seq = 0
    fills = 0
    give_up = time.monotonic() + LONGEST
    backends = [cache._backend, cache._abackend]
    for backend in backends:  # count the reads that went to Redis: the rest were L1 hits
        real = backend._inner_scripts.batch

        def counted(fill: Any, real: Any = real) -> Any:
            nonlocal fills
            fills += 1
            return real(fill)

        backend._inner_scripts.batch = counted

    mine = [key for i, key in enumerate(KEYS) if i % 4 == int(name[1:])]

    def one() -> tuple[str, Any] | None:
        # each key has one writer: a process's own writes never drop another's keys from
        # its L1, so only the invalidation link keeps them fresh
        nonlocal seq
        if rng.random() < WRITE_SHARE:
            seq += 1
            return rng.choice(mine), f"{name}:{seq}"
        return rng.choice(KEYS), None

    async def run_async() -> None:
        while not stop.is_set() and time.monotonic() < give_up:
            key, value = one()  # type: ignore[misc]
            began = time.monotonic()
            if value is None:
                reads.append((key, await cache.aget(key), began))
            else:
                ok = await cache.aset(key, value)
                writes.append((key, value, began, time.monotonic(), bool(ok)))
            await asyncio.sleep(0)

    def run_sync() -> None:
        while not stop.is_set() and time.monotonic() < give_up:
            key, value = one()  # type: ignore[misc]
            began = time.monotonic()
            if value is None:
                reads.append((key, cache.get(key), began))
            else:
                ok = cache.set(key, value)
                writes.append((key, value, began, time.monotonic(), bool(ok)))

    if use_async:
        asyncio.run(run_async())
    else:
        run_sync()
    stats = cache.stats()
    link = cache._backend.layer.link
    cache.close()
    Path(out).write_text(
        json.dumps(
            {
                "reads": reads,
                "writes": writes,
                "l1_hits": stats["hits"] - fills,
                "connects": link.connects,
                "rebuilds": getattr(link, "rebuilds", 0),  # a cluster's: links moved
                "flushes": stats["near_flushes"],
            }
        )
    )


def stale_reads(
    reads: list[tuple[str, Any, float]], writes: list[tuple[str, str, float, float, bool]]
) -> list[str]:
    by_value = {(key, value): (started, ended) for key, value, started, ended, _ in writes}
    by_key: dict[str, list[tuple[float, float]]] = {}
    for key, _, started, ended, ok in writes:
        if ok:
            by_key.setdefault(key, []).append((started, ended))
    found = []
    for key, value, began in reads:
        if value is None:
            continue
        _, written_end = by_value[(key, value)]
        for started, ended in by_key.get(key, ()):
            if started > written_end and ended < began - MAX_STALE:
                found.append(
                    f"{key}={value} read at {began:.3f}, overwritten by a write "
                    f"that ended at {ended:.3f} ({began - ended:.3f} s before)"
                )
                break
    return found


def test_the_checker_finds_a_stale_read() -> None:
    writes = [("k", "a", 0.0, 0.1, True), ("k", "b", 0.2, 0.3, True)]
    assert stale_reads([("k", "a", 0.3 + MAX_STALE + 0.01)], writes)
    assert not stale_reads([("k", "a", 0.5)], writes)  # within max_stale of b
    assert not stale_reads([("k", "b", 5.0)], writes)


def _links_up(admin: Any, links: int = 4, timeout: float = 10.0) -> None:
    """Wait until every worker's invalidation link is connected (they reconnect on their
    own; another process's state can only be polled), so that each cut cuts all four."""
    deadline = time.monotonic() + timeout
    while len(admin.client_list(_type="pubsub")) < links and time.monotonic() < deadline:
        time.sleep(0.02)


def test_chaos_no_read_older_than_max_stale(private_redis: RedisServer, tmp_path: Path) -> None:
    prefix = unique_prefix()
    context = multiprocessing.get_context("spawn")
    stop = context.Event()
    outs = [str(tmp_path / f"w{i}.json") for i in range(4)]
    workers = [
        context.Process(
            target=_worker,
            args=(private_redis.url, prefix, f"w{i}", i % 2 == 1, outs[i], stop),
        )
        for i in range(4)
    ]
    for worker in workers:
        worker.start()
    admin = redis.Redis.from_url(private_redis.url)
    try:
        _links_up(admin)  # every worker is running
        time.sleep(0.8)  # the workload's own pace
        events = []
        for round_ in range(3):
            _links_up(admin)
            events.append(("cut", admin.client_kill_filter(_type="pubsub")))
            time.sleep(0.5)
            if round_ == 1:
                private_redis.freeze()
                time.sleep(0.3)
                private_redis.thaw()
                events.append(("freeze", 0.3))
            time.sleep(0.4)
        private_redis.restart()
        events.append(("restart", 1))
        admin = redis.Redis.from_url(private_redis.url)
        time.sleep(0.6)
        _links_up(admin)
        events.append(("cut", admin.client_kill_filter(_type="pubsub")))
        _links_up(admin)
        time.sleep(0.5)  # reads after the last reconnect
    finally:
        stop.set()
        for worker in workers:
            worker.join(30)
    assert [worker.exitcode for worker in workers] == [0, 0, 0, 0]
    results = [json.loads(Path(out).read_text()) for out in outs]
    reads = [tuple(r) for result in results for r in result["reads"]]
    writes = [tuple(w) for result in results for w in result["writes"]]
    stale = stale_reads(reads, writes)  # type: ignore[arg-type]
    assert stale == [], stale[:10]
    assert len(reads) > 1000 and len(writes) > 100
    l1_hits = sum(result["l1_hits"] for result in results)
    assert l1_hits > len(reads) / 4  # the L1 served, or this proved nothing
    # every worker's link came back after each cut and the restart
    assert all(result["connects"] >= 6 for result in results), [r["connects"] for r in results]
    print(
        f"chaos: {len(reads)} reads ({l1_hits} from the L1), {len(writes)} writes, "
        f"events {events}, "
        f"connects {[r['connects'] for r in results]}, 0 stale"
    )
