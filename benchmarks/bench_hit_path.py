#!/usr/bin/env python
"""The cost of a cache hit: cachekit against the floor and its peers, side by side.

    python benchmarks/bench_hit_path.py            # all sections, pinned to CPU 1
    python benchmarks/bench_hit_path.py --quick    # fewer, shorter rounds
    python benchmarks/bench_hit_path.py --only memory-sync,redis-async

Sections (each a markdown table; "vs floor" is the median ns/op over the floor's):

1. memory, sync:  functools.lru_cache (floor), cachetools.cached(TTLCache), theine
   Memoize, cachekit ``Cache().cached(ttl=...)``; then cachekit's cost per hit over
   cachetools' (both keeping a TTL, one int argument: the row the memory hit is held to).
2. memory, async: a bare ``async def`` awaited (floor), aiocache ``@cached``
   (SimpleMemoryCache), cashews ``@cache`` on ``mem://``, theine, cachekit.
3. Redis, sync:   redis-py ``GET`` + ``orjson.loads`` (floor), cachekit, django-redis
   (``cache.get_or_set``), dogpile.cache (``cache_on_arguments``, redis backend),
   Flask-Caching ``@memoize`` (RedisCache).
4. Redis, async:  redis-py asyncio ``GET`` + ``orjson.loads`` (floor), cachekit, aiocache
   ``@cached(cache=RedisCache)``, cashews ``@cache`` on ``redis://``.
5. Typed hits (``typed-memory``: memory with the orjson serializer, so the decode is all
   there is; ``typed-redis``: Redis, sync): what a hit costs when cachekit decodes it into
   the function's return annotation (``-> datetime``, ``-> tuple[int, int]``, a
   dataclass, a pydantic model) or reads a tagged payload (``-> bytes``), next to the
   plain JSON hit (unannotated, and ``-> dict[str, Any]``, which is not converted).
6. Redis, sync miss + set (``redis-miss``): every call a new key; the floor is redis-py
   ``GET`` then ``SET(orjson.dumps(v), px=...)``, next to the same ``GET`` then
   ``SET ... NX`` (what a load's store is, see cachekit.leases.rules: an invalidation
   leaves a tombstone in the key, so NX refuses a load it revoked).

The script starts its own redis-server on a free port and pins itself and that server to
one CPU (``--cpu``, default 1; ``--cpu -1`` to not pin). Every contender is warmed up and
calibrated to ~``--target`` seconds per round, then ``--rounds`` rounds interleave the
contenders; the table shows the median, and the ratio to the floor is the median of the
per-round ratios (paired by round, so a noisy stretch moves both sides together). Redis
commands per hit come from ``INFO commandstats`` deltas over 1000 hits. Every contender
caches the same small dict under its own defaults (serializer, key scheme), as a user
would get it.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import functools
import logging
import os
import sys
import warnings
from collections.abc import Callable
from datetime import timedelta
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _util import (
    VALUE,
    Contender,
    RedisProcess,
    ameasure,
    async_loop,
    default_cpu,
    machine_line,
    measure,
    pin,
    sync_loop,
    table,
    write_results,
)

TTL = 300
ARG = 42
SECTIONS = (
    "memory-sync",
    "memory-async",
    "redis-sync",
    "redis-async",
    "typed-memory",
    "typed-redis",
    "redis-miss",
)
MEMORY_SYNC_TARGET = "Target: cachekit faster than cachetools."
VS_CACHETOOLS_TARGET = "Target: ≤ 0.60x cachetools' cost per hit, with the TTL honoured."
MEMORY_ASYNC_TARGET = "Target: cachekit ≤ 15x the floor."
REDIS_TARGET = "Target: cachekit ≤ 1.10x the floor, one GET per hit."
MISS_TARGET = "Target: cachekit ≤ 1.10x the floor (GET + SET)."


def _value() -> dict[str, Any]:
    return dict(VALUE)


# -- 1. memory, sync -------------------------------------------------------------------------
def memory_sync() -> list[Contender]:
    import cachetools

    from cachekit import Cache

    @functools.lru_cache(maxsize=10_000)
    def lru(user_id: int) -> dict[str, Any]:
        return _value()

    @cachetools.cached(cachetools.TTLCache(maxsize=10_000, ttl=TTL))
    def ct(user_id: int) -> dict[str, Any]:
        return _value()

    @Cache().cached(ttl=TTL)
    def ck(user_id: int) -> dict[str, Any]:
        return _value()

    out = [
        Contender("functools.lru_cache", sync_loop(lru, ARG), floor=True),
        Contender("cachetools.cached(TTLCache)", sync_loop(ct, ARG)),
    ]
    try:
        from theine import Memoize

        @Memoize(10_000, timedelta(seconds=TTL))
        def th(user_id: int) -> dict[str, Any]:
            return _value()

        out.append(Contender("theine Memoize", sync_loop(th, ARG)))
    except ImportError:
        pass
    out.append(Contender("cachekit Cache().cached", sync_loop(ck, ARG)))
    for c in out:
        c.run(2)  # first call fills the cache
    return out


def vs_cachetools(contenders: list[Contender]) -> str:
    """The row the memory hit is held to: cachekit's cost per hit over cachetools' (both
    keeping a TTL, one int argument), paired by round like the floor ratios."""
    ct = next(c for c in contenders if c.name == "cachetools.cached(TTLCache)")
    ck = next(c for c in contenders if c.name.startswith("cachekit"))
    return "\n".join(
        [
            "| memory hit, sync, one int argument, TTL honoured | cachekit ns/hit "
            "| cachetools ns/hit | cachekit / cachetools (paired median) |",
            "|---|---:|---:|---:|",
            f"| `@Cache().cached(ttl={TTL})` vs `cachetools.cached(TTLCache(10_000, {TTL}))` "
            f"| {ck.median:,.0f} | {ct.median:,.0f} | {ck.ratio(ct):.2f}x |",
            "",
            VS_CACHETOOLS_TARGET,
        ]
    )


# -- 2. memory, async ------------------------------------------------------------------------
async def memory_async() -> list[Contender]:
    import aiocache
    from cashews import Cache as CashewsCache

    from cachekit import Cache

    async def bare(user_id: int) -> dict[str, Any]:
        return VALUE

    @aiocache.cached(ttl=TTL)
    async def aio(user_id: int) -> dict[str, Any]:
        return _value()

    cashews = CashewsCache()
    cashews.setup("mem://")

    @cashews(ttl=TTL)
    async def cw(user_id: int) -> dict[str, Any]:
        return _value()

    @Cache().cached(ttl=TTL)
    async def ck(user_id: int) -> dict[str, Any]:
        return _value()

    out = [
        Contender("bare async def", async_loop(bare, ARG), floor=True),
        Contender("aiocache @cached (SimpleMemoryCache)", async_loop(aio, ARG)),
        Contender("cashews @cache (mem://)", async_loop(cw, ARG)),
    ]
    try:
        from theine import Memoize

        @Memoize(10_000, timedelta(seconds=TTL))
        async def th(user_id: int) -> dict[str, Any]:
            return _value()

        out.append(Contender("theine Memoize", async_loop(th, ARG)))
    except ImportError:
        pass
    out.append(Contender("cachekit Cache().cached", async_loop(ck, ARG)))
    for c in out:
        await c.run(2)
    return out


# -- 3. Redis, sync --------------------------------------------------------------------------
def _django_cache(url: str) -> Any:
    import django
    from django.conf import settings

    if not settings.configured:
        settings.configure(
            CACHES={
                "default": {
                    "BACKEND": "django_redis.cache.RedisCache",
                    "LOCATION": url,
                    "OPTIONS": {"CLIENT_CLASS": "django_redis.client.DefaultClient"},
                }
            },
            USE_TZ=True,
        )
        django.setup()
    from django.core.cache import caches

    return caches["default"]


def _flask_memoize(url: str) -> Callable[..., Any]:
    from flask import Flask
    from flask_caching import Cache as FlaskCache

    app = Flask("bench")
    fcache = FlaskCache(
        app,
        config={"CACHE_TYPE": "RedisCache", "CACHE_REDIS_URL": url, "CACHE_DEFAULT_TIMEOUT": TTL},
    )

    @fcache.memoize(timeout=TTL)
    def fl(user_id: int) -> dict[str, Any]:
        return _value()

    return fl


def redis_sync(server: RedisProcess) -> list[Contender]:
    import orjson
    import redis
    from dogpile.cache import make_region

    from cachekit import Cache

    url = server.url
    floor_client = redis.Redis(host="127.0.0.1", port=server.port)
    floor_client.set("floor:user:42", orjson.dumps(VALUE))
    get, loads = floor_client.get, orjson.loads

    def floor(key: str) -> Any:
        return loads(get(key))

    @Cache(url, prefix="ck-sync").cached(ttl=TTL)
    def ck(user_id: int) -> dict[str, Any]:
        return _value()

    dj = _django_cache(url)

    def django_get(user_id: int) -> Any:
        return dj.get_or_set(f"user:{user_id}", _value, TTL)

    region = make_region().configure(
        "dogpile.cache.redis",
        expiration_time=TTL,
        arguments={
            "host": "127.0.0.1",
            "port": server.port,
            "db": 0,
            "redis_expiration_time": TTL * 2,
        },
    )

    @region.cache_on_arguments()
    def dp(user_id: int) -> dict[str, Any]:
        return _value()

    out = [
        Contender("redis-py GET + orjson.loads", sync_loop(floor, "floor:user:42"), floor=True),
        Contender("cachekit Cache(redis).cached", sync_loop(ck, ARG)),
        Contender("django-redis get_or_set", sync_loop(django_get, ARG)),
        Contender("dogpile.cache cache_on_arguments", sync_loop(dp, ARG)),
        Contender("Flask-Caching @memoize (RedisCache)", sync_loop(_flask_memoize(url), ARG)),
    ]
    for c in out:
        c.run(2)
        before = server.command_calls()
        c.run(1000)
        c.commands = server.commands_since(before) / 1000
    return out


# -- 4. Redis, async -------------------------------------------------------------------------
async def redis_async(server: RedisProcess) -> list[Contender]:
    import aiocache
    import orjson
    import redis.asyncio
    from aiocache import RedisCache
    from cashews import Cache as CashewsCache

    from cachekit import Cache

    url = server.url
    floor_client = redis.asyncio.Redis(host="127.0.0.1", port=server.port)
    await floor_client.set("floor:user:42", orjson.dumps(VALUE))
    get, loads = floor_client.get, orjson.loads

    async def floor(key: str) -> Any:
        return loads(await get(key))

    @Cache(url, prefix="ck-async").cached(ttl=TTL)
    async def ck(user_id: int) -> dict[str, Any]:
        return _value()

    @aiocache.cached(ttl=TTL, cache=RedisCache, endpoint="127.0.0.1", port=server.port)
    async def aio(user_id: int) -> dict[str, Any]:
        return _value()

    cashews = CashewsCache()
    cashews.setup(url)

    @cashews(ttl=TTL)
    async def cw(user_id: int) -> dict[str, Any]:
        return _value()

    out = [
        Contender(
            "redis.asyncio GET + orjson.loads", async_loop(floor, "floor:user:42"), floor=True
        ),
        Contender("cachekit Cache(redis).cached", async_loop(ck, ARG)),
        Contender("aiocache @cached (RedisCache)", async_loop(aio, ARG)),
        Contender("cashews @cache (redis://)", async_loop(cw, ARG)),
    ]
    for c in out:
        await c.run(2)
        before = server.command_calls()
        await c.run(1000)
        c.commands = server.commands_since(before) / 1000
    # (the clients are left open: closing a cachekit Cache and then using it again on the
    # same loop is not what a hit costs)
    return out


# -- 5. typed hits ---------------------------------------------------------------------------
@dataclasses.dataclass
class UserRecord:
    id: int
    name: str
    email: str
    roles: list[str]
    active: bool


def typed(url: str, server: RedisProcess | None) -> list[Contender]:
    from datetime import datetime, timezone

    import orjson

    from cachekit import Cache

    cache = Cache(url, prefix="ck-typed", serializer="orjson")
    when = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)

    @cache.cached(ttl=TTL)
    def plain(user_id):  # type: ignore[no-untyped-def]
        return _value()

    @cache.cached(ttl=TTL)
    def json_shaped(user_id: int) -> dict[str, Any]:
        return _value()

    @cache.cached(ttl=TTL)
    def stamp(user_id: int) -> datetime:
        return when

    @cache.cached(ttl=TTL)
    def pair(user_id: int) -> tuple[int, int]:
        return (user_id, user_id + 1)

    @cache.cached(ttl=TTL)
    def record(user_id: int) -> UserRecord:
        return UserRecord(**_value())

    @cache.cached(ttl=TTL)
    def blob(user_id: int) -> bytes:
        return b"\x89PNG" + bytes(60)

    if server is not None:
        import redis

        client = redis.Redis(host="127.0.0.1", port=server.port)
        client.set("floor:user:42", orjson.dumps(VALUE))
        get, loads = client.get, orjson.loads

        def floor(key: str) -> Any:
            return loads(get(key))

        out = [
            Contender("redis-py GET + orjson.loads", sync_loop(floor, "floor:user:42"), floor=True)
        ]
    else:
        out = [
            Contender(
                "orjson.loads of the entry",
                sync_loop(orjson.loads, orjson.dumps(VALUE)),
                floor=True,
            )
        ]
    out += [
        Contender("cachekit unannotated (plain JSON)", sync_loop(plain, ARG)),
        Contender("cachekit -> dict[str, Any] (not converted)", sync_loop(json_shaped, ARG)),
        Contender("cachekit -> datetime", sync_loop(stamp, ARG)),
        Contender("cachekit -> tuple[int, int]", sync_loop(pair, ARG)),
        Contender("cachekit -> dataclass (5 fields)", sync_loop(record, ARG)),
        Contender("cachekit -> bytes (64 B, tagged)", sync_loop(blob, ARG)),
    ]
    try:
        import pydantic

        class UserModel(pydantic.BaseModel):
            id: int
            name: str
            email: str
            roles: list[str]
            active: bool

        @cache.cached(ttl=TTL)
        def model(user_id: int) -> UserModel:
            return UserModel(**_value())

        out.append(Contender("cachekit -> pydantic model (5 fields)", sync_loop(model, ARG)))
    except ImportError:
        pass
    for c in out:
        c.run(2)
    return out


# -- 6. miss + set on Redis, sync --------------------------------------------------------------
def redis_miss(server: RedisProcess) -> list[Contender]:
    """A miss and its store: every call a new key. The floor is what any cache must do
    (``GET``, then ``SET`` of the ``orjson.dumps``'d value with a TTL); the second floor
    row is the same ``GET`` followed by ``SET ... NX`` (a load's store: see
    cachekit.leases.rules) in place of the plain ``SET``."""
    import itertools

    import orjson
    import redis

    from cachekit import Cache

    client = redis.Redis(host="127.0.0.1", port=server.port)
    get, set_, dumps = client.get, client.set, orjson.dumps
    px = TTL * 1000
    floor_ids = itertools.count()
    lease_ids = itertools.count()

    def floor() -> None:
        key = f"floor:miss:{next(floor_ids)}"
        if get(key) is None:
            set_(key, dumps(_value()), px=px)

    def lease_floor() -> None:
        key = f"floor:lease:{next(lease_ids)}"
        if get(key) is None:
            set_(key, dumps(_value()), px=px, nx=True)

    @Cache(server.url, prefix="ck-miss").cached(ttl=TTL)
    def ck(user_id: int) -> dict[str, Any]:
        return _value()

    ck_ids = itertools.count()

    def cachekit_miss() -> None:
        ck(next(ck_ids))

    out = [
        Contender("redis-py GET + SET(orjson.dumps, px)", sync_loop(floor), floor=True),
        Contender("redis-py GET + SET(orjson.dumps, px, nx) (a load's store)", sync_loop(lease_floor)),
        Contender("cachekit Cache(redis).cached, miss + store", sync_loop(cachekit_miss)),
    ]
    for c in out:
        c.run(2)
        before = server.command_calls()
        c.run(1000)
        c.commands = server.commands_since(before) / 1000
    return out


# -- main -----------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cpu", type=int, default=default_cpu(), help="CPU to pin to (-1: none)")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--target", type=float, default=0.1, help="seconds per contender per round")
    parser.add_argument("--only", default=",".join(SECTIONS), help="comma-separated sections")
    parser.add_argument("--quick", action="store_true", help="3 rounds of 0.05 s")
    parser.add_argument("--json", metavar="FILE", help="also write the tables as JSON (chart.py)")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.target = 3, 0.05
    only = set(args.only.split(","))
    unknown = only - set(SECTIONS)
    if unknown:
        parser.error(f"unknown section(s): {', '.join(sorted(unknown))}")

    warnings.simplefilter("ignore")  # peers' deprecation warnings are not the point here
    logging.basicConfig(level=logging.ERROR)
    pinned = pin(args.cpu)
    print(f"<!-- {machine_line()}; {pinned}; {args.rounds} rounds x ~{args.target} s -->\n")
    rounds, target = args.rounds, args.target

    if "memory-sync" in only:
        cs = memory_sync()
        measure(cs, rounds, target)
        print(table("Memory backend, sync hit", cs, MEMORY_SYNC_TARGET) + "\n", flush=True)
        print(vs_cachetools(cs) + "\n", flush=True)
    if "memory-async" in only:

        async def mem_async() -> list[Contender]:
            cs = await memory_async()
            await ameasure(cs, rounds, target)
            return cs

        cs = asyncio.run(mem_async())
        print(table("Memory backend, async hit", cs, MEMORY_ASYNC_TARGET) + "\n", flush=True)
    if only & {"redis-sync", "redis-async", "typed-redis", "redis-miss"}:
        with RedisProcess() as server:
            if "redis-sync" in only:
                cs = redis_sync(server)
                measure(cs, rounds, target)
                print(table("Redis, sync hit", cs, REDIS_TARGET, True) + "\n", flush=True)
            if "redis-async" in only:

                async def red_async() -> list[Contender]:
                    cs = await redis_async(server)
                    await ameasure(cs, rounds, target)
                    return cs

                cs = asyncio.run(red_async())
                print(table("Redis, async hit", cs, REDIS_TARGET, True) + "\n", flush=True)
            if "typed-redis" in only:
                cs = typed(server.url, server)
                measure(cs, rounds, target)
                print(table("Typed hits, Redis (sync)", cs) + "\n", flush=True)
            if "redis-miss" in only:
                cs = redis_miss(server)
                measure(cs, rounds, target)
                print(table("Redis, sync miss + set", cs, MISS_TARGET, True) + "\n", flush=True)
    if "typed-memory" in only:
        cs = typed("memory://", None)
        measure(cs, rounds, target)
        print(table("Typed hits, memory with the orjson serializer", cs) + "\n", flush=True)
    if args.json:
        meta = {"script": "bench_hit_path.py", "machine": machine_line(), "pinned": pinned,
                "rounds": rounds, "target_s": target}  # fmt: skip
        write_results(args.json, meta)


if __name__ == "__main__":
    main()
