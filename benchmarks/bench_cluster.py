#!/usr/bin/env python
"""Redis Cluster: the cost of a hit, and of ``get_many`` over keys on every slot.

    python benchmarks/bench_cluster.py            # pinned to CPU 1 (with its 3 nodes)
    python benchmarks/bench_cluster.py --quick

Starts its own 3-primary cluster (``cachekit.testing.servers.ClusterServers``, after
pinning, so the nodes share the benchmark's CPU) and stops it at the end. Sections:

1. sync hit (``@cached``, one int argument): redis-py ``RedisCluster.get`` +
   ``orjson.loads`` (floor) beside cachekit on the cluster, and with ``near=True`` (the
   L1 in front of it, one invalidation link per primary). Targets: 1 round trip; the
   near hit none, ≤ 0.05x the floor.
2. ``get_many`` of 100 keys spread over the slots (and so over the 3 primaries), sync
   and async: redis-py's ``mget_nonatomic`` + ``orjson.loads`` of each (floor) beside
   cachekit's ``get_many``. Target: at most one round trip per primary.

Round trips are counted by wrapping the connection's ``send_packed_command`` (one call
per request sent: a pipeline to one node is one) over one call of each contender;
commands from ``INFO commandstats`` summed over the nodes.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _util import (
    VALUE,
    Contender,
    ameasure,
    async_loop,
    default_cpu,
    machine_line,
    measure,
    pin,
    sync_loop,
    table,
)

TTL = 600
KEYS = [f"item:{i}" for i in range(100)]
_CLOSE: list[Any] = []  # caches to close before the cluster stops (the near one's links)


@contextmanager
def counting_sends() -> Iterator[list[int]]:
    """Count requests sent (sync and asyncio connections) while the block runs."""
    import redis.asyncio.connection as aconn
    import redis.connection as sconn

    count = [0]
    sync_send, async_send = (
        sconn.Connection.send_packed_command,
        aconn.Connection.send_packed_command,
    )

    def send(self: Any, *args: Any, **kwargs: Any) -> Any:
        count[0] += 1
        return sync_send(self, *args, **kwargs)

    async def asend(self: Any, *args: Any, **kwargs: Any) -> Any:
        count[0] += 1
        return await async_send(self, *args, **kwargs)

    sconn.Connection.send_packed_command = send  # type: ignore[method-assign]
    aconn.Connection.send_packed_command = asend  # type: ignore[method-assign]
    try:
        yield count
    finally:
        sconn.Connection.send_packed_command = sync_send  # type: ignore[method-assign]
        aconn.Connection.send_packed_command = async_send  # type: ignore[method-assign]


def round_trips(call: Callable[[], Any]) -> int:
    with counting_sends() as count:
        call()
    return count[0]


async def around_trips(call: Callable[[], Any]) -> int:
    with counting_sends() as count:
        await call()
    return count[0]


def sync_sections(
    url: str, ports: list[int]
) -> tuple[list[Contender], list[Contender], dict[str, int]]:
    import orjson
    from redis.cluster import RedisCluster

    from cachekit import Cache

    client = RedisCluster(host="127.0.0.1", port=ports[0])
    client.set("floor:user:42", orjson.dumps(VALUE))
    client.mset_nonatomic({f"floor:{k}": orjson.dumps(VALUE) for k in KEYS})
    get, mget, loads = client.get, client.mget_nonatomic, orjson.loads
    floor_keys = [f"floor:{k}" for k in KEYS]

    def floor_hit(key: str) -> Any:
        return loads(get(key))

    def floor_many(keys: list[str]) -> Any:
        return [loads(v) for v in mget(keys)]

    cache = Cache(url, prefix="bc")

    @cache.cached(ttl=TTL)
    def user(user_id: int) -> dict[str, Any]:
        return dict(VALUE)

    near = Cache(url, prefix="bcn", near=True)
    _CLOSE.append(near)

    @near.cached(ttl=TTL)
    def near_user(user_id: int) -> dict[str, Any]:
        return dict(VALUE)

    user(42)
    for _ in range(3):  # until the L1 holds it (its own write's echo may drop a fill)
        near_user(42)
        near._backend.layer.link.caught_up(5.0)  # type: ignore[attr-defined]
    cache.set_many({k: VALUE for k in KEYS}, ttl=TTL)
    assert cache.get_many(KEYS) == {k: VALUE for k in KEYS}
    trips = {
        "floor hit": round_trips(lambda: floor_hit("floor:user:42")),
        "cachekit hit": round_trips(lambda: user(42)),
        "near hit": round_trips(lambda: near_user(42)),
        "floor get_many(100)": round_trips(lambda: floor_many(floor_keys)),
        "cachekit get_many(100)": round_trips(lambda: cache.get_many(KEYS)),
        "slots of the 100 keys": len({client.keyslot(k) for k in KEYS}),
        "primaries": len(client.get_primaries()),
    }
    hit = [
        Contender(
            "redis-py RedisCluster.get + orjson.loads",
            sync_loop(floor_hit, "floor:user:42"),
            floor=True,
        ),
        Contender("cachekit Cache(redis+cluster).cached", sync_loop(user, 42)),
        Contender("cachekit Cache(redis+cluster, near=True).cached", sync_loop(near_user, 42)),
    ]
    many = [
        Contender(
            "redis-py mget_nonatomic + orjson.loads", sync_loop(floor_many, floor_keys), floor=True
        ),
        Contender("cachekit get_many", sync_loop(cache.get_many, KEYS)),
    ]
    return hit, many, trips


async def async_section(url: str, ports: list[int]) -> tuple[list[Contender], dict[str, int]]:
    import orjson
    from redis.asyncio.cluster import RedisCluster

    from cachekit import Cache

    client = RedisCluster(host="127.0.0.1", port=ports[0])
    await client.mset_nonatomic({f"afloor:{k}": orjson.dumps(VALUE) for k in KEYS})
    mget, loads = client.mget_nonatomic, orjson.loads
    floor_keys = [f"afloor:{k}" for k in KEYS]

    async def floor_many(keys: list[str]) -> Any:
        return [loads(v) for v in await mget(keys)]

    cache = Cache(url, prefix="bca")
    await cache.aset_many({k: VALUE for k in KEYS}, ttl=TTL)
    assert await cache.aget_many(KEYS) == {k: VALUE for k in KEYS}
    trips = {
        "async floor get_many(100)": await around_trips(lambda: floor_many(floor_keys)),
        "async cachekit get_many(100)": await around_trips(lambda: cache.aget_many(KEYS)),
    }
    return [
        Contender(
            "redis-py asyncio mget_nonatomic + orjson.loads",
            async_loop(floor_many, floor_keys),
            floor=True,
        ),
        Contender("cachekit aget_many", async_loop(cache.aget_many, KEYS)),
    ], trips


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cpu", type=int, default=default_cpu())
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--target", type=float, default=0.1)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.target = 3, 0.03
    pinned = pin(args.cpu)

    from cachekit.testing.servers import ClusterServers

    with ClusterServers() as servers:
        print(f"# Redis Cluster ({machine_line()}; {pinned}; 3 primaries, redis-server 7)\n")
        hit, many, trips = sync_sections(servers.url, servers.ports)
        measure(hit, args.rounds, args.target)
        measure(many, args.rounds, args.target)

        async def run_async() -> tuple[list[Contender], dict[str, int]]:
            contenders, more = await async_section(servers.url, servers.ports)
            await ameasure(contenders, args.rounds, args.target)
            return contenders, more

        amany, atrips = asyncio.run(run_async())
        trips.update(atrips)
        print(
            table(
                "hit (sync)",
                hit,
                f"round trips per hit: floor {trips['floor hit']}, "
                f"cachekit {trips['cachekit hit']}, near {trips['near hit']}; "
                f"near hit {hit[2].ratio(hit[0]):.3f}x the floor (target ≤ 0.05x)",
            )
        )
        print()
        print(
            table(
                "get_many of 100 keys across slots (sync)",
                many,
                f"{trips['slots of the 100 keys']} slots on {trips['primaries']} primaries; "
                f"round trips per call: floor {trips['floor get_many(100)']}, "
                f"cachekit {trips['cachekit get_many(100)']}",
            )
        )
        print()
        print(
            table(
                "get_many of 100 keys across slots (async)",
                amany,
                f"round trips per call: floor {trips['async floor get_many(100)']}, "
                f"cachekit {trips['async cachekit get_many(100)']}",
            )
        )
        for cache in _CLOSE:
            cache.close()


if __name__ == "__main__":
    main()
