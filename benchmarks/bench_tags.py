"""Tags: what tag sets (cachekit's choice) cost, beside tag versions, on a real redis-server.

    python benchmarks/bench_tags.py [--entries 10000] [--hits 5000]

Starts its own redis-server on a free port. For N tagged entries it measures, per
scheme:

- write: ``set(key, value, tags=("users",))`` per entry (µs/op, round trips, commands);
- hit: ``get(key)`` of a tagged entry (µs/op, commands per hit);
- invalidation of the tag: wall time and commands, and that every entry is gone.

Schemes: cachekit untagged (the floor), cachekit tag sets, cachekit on memory,
``delete_pattern`` (a SCAN, the no-index alternative), and *tag versions* built on
redis-py here for comparison (entry stores the tag's version; a hit is one MGET of
entry + tag version; invalidation is one INCR, entries stay until their TTL).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

import orjson
import redis

from cachekit import Cache
from cachekit.testing.servers import RedisServer


def commands(client: redis.Redis) -> int:
    stats = client.info("commandstats")
    return sum(int(v["calls"]) for k, v in stats.items() if k != "cmdstat_info")


def timed(client: redis.Redis | None, func: Callable[[], Any]) -> tuple[float, int, Any]:
    before = commands(client) if client is not None else 0
    start = time.perf_counter()
    result = func()
    elapsed = time.perf_counter() - start
    after = commands(client) if client is not None else 0
    return elapsed, after - before, result


def cachekit_rows(url: str, n: int, hits: int, tagged: bool, client: Any, label: str) -> list[Any]:
    cache = Cache(url, prefix=f"bench{time.time_ns()}", default_ttl=600)
    tags = ("users",) if tagged else None
    value = {"name": "ann", "id": 1}

    def write() -> None:
        for i in range(n):
            cache.set(f"user:{i}", value, tags=tags)

    def hit() -> None:
        for i in range(hits):
            cache.get(f"user:{i % n}")

    w, wc, _ = timed(client, write)
    h, hc, _ = timed(client, hit)
    if tagged:
        inv, ic, removed = timed(client, lambda: cache.invalidate_tags("users"))
    else:
        inv, ic, removed = timed(client, lambda: cache.delete_pattern("user:*"))
    left = sum(1 for i in range(n) if cache.exists(f"user:{i}"))
    cache.clear()
    cache.close()
    return [label, w / n * 1e6, wc / n, h / hits * 1e6, hc / hits, inv * 1e3, ic, removed, left]


def tag_versions_row(url: str, n: int, hits: int, client: redis.Redis) -> list[Any]:
    r = redis.Redis.from_url(url)
    prefix = f"tv{time.time_ns()}"
    tag = f"{prefix}:tagver:users"
    value = {"name": "ann", "id": 1}

    def write() -> None:
        for i in range(n):
            # the writer must read the tag's version first, or write it blind: one GET + SET
            version = r.get(tag) or b"0"
            r.set(f"{prefix}:user:{i}", orjson.dumps([int(version), value]), ex=600)

    def hit() -> None:
        for i in range(hits):
            raw, version = r.mget(f"{prefix}:user:{i % n}", tag)
            entry = orjson.loads(raw)
            if entry[0] != int(version or b"0"):
                raise AssertionError("stale")

    w, wc, _ = timed(client, write)
    h, hc, _ = timed(client, hit)
    inv, ic, _ = timed(client, lambda: r.incr(tag))

    def still_valid() -> int:
        current = int(r.get(tag) or b"0")
        return sum(
            1
            for i in range(n)
            if orjson.loads(r.get(f"{prefix}:user:{i}") or b"[-1]")[0] == current
        )

    left_valid = still_valid()
    for batch in range(0, n, 1000):
        r.delete(*[f"{prefix}:user:{i}" for i in range(batch, min(n, batch + 1000))])
    r.delete(tag)
    r.close()
    # entries are invalid but stay in Redis until their TTL: "removed" is 0
    return ["tag versions (MGET hit)", w / n * 1e6, wc / n, h / hits * 1e6, hc / hits,
            inv * 1e3, ic, 0, left_valid]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--entries", type=int, default=10_000)
    parser.add_argument("--hits", type=int, default=5_000)
    args = parser.parse_args()
    n, hits = args.entries, args.hits
    server = RedisServer()
    try:
        client = redis.Redis.from_url(server.url)
        rows = [
            cachekit_rows(server.url, n, hits, False, client, "cachekit untagged + delete_pattern"),
            cachekit_rows(server.url, n, hits, True, client, "cachekit tag sets"),
            tag_versions_row(server.url, n, hits, client),
            cachekit_rows("memory://?max_entries=100000", n, hits, True, None, "cachekit memory"),
        ]
        client.close()
    finally:
        server.stop()
    print(f"\n{n} entries tagged 'users', {hits} hits, one redis-server on loopback\n")
    print("| scheme | write µs/op | cmds/write | hit µs/op | cmds/hit | invalidate ms "
          "| invalidate cmds | removed | still valid after |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for label, w, wc, h, hc, inv, ic, removed, left in rows:
        print(f"| {label} | {w:.1f} | {wc:.2f} | {h:.1f} | {hc:.2f} | {inv:.1f} | {ic} "
              f"| {removed} | {left} |")  # fmt: skip


if __name__ == "__main__":
    main()
