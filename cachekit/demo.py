"""A two-minute tour: ``python -m cachekit.demo`` (no server needed).

A slow function and a slow "database" made fast by the embedded in-memory cache, with the
hits, misses and timings printed; then the cache's stats and the ``cachekit`` command line.
"""

from __future__ import annotations

import asyncio
import time

from cachekit import Cache
from cachekit.cli import COMMANDS

cache = Cache(default_ttl=60)  # in-process memory: the embedded default

DATABASE = {1: {"id": 1, "name": "Ada"}, 2: {"id": 2, "name": "Grace"}}
queries = 0


@cache.cached(ttl=30, key="user:{user_id}", tags=("users",))
def get_user(user_id: int) -> dict[str, object] | None:
    """A slow database read (50 ms)."""
    global queries
    queries += 1
    time.sleep(0.05)
    return DATABASE.get(user_id)


@cache.cached(ttl=30)
async def exchange_rate(currency: str) -> float:
    """A slow remote call (100 ms)."""
    await asyncio.sleep(0.1)
    return {"EUR": 1.08, "GBP": 1.27}.get(currency, 1.0)


def timed(label: str, func: object, *args: object) -> object:
    started = time.perf_counter()
    result = func(*args)  # type: ignore[operator]
    elapsed = (time.perf_counter() - started) * 1000
    print(f"  {label:<34} {elapsed:9.3f} ms  -> {result}")
    return result


def main() -> None:
    print("cachekit demo: the in-memory cache, no server needed\n")
    print("1. a slow database read, cached with @cache.cached(key='user:{user_id}')")
    timed("get_user(1)  first call (miss)", get_user, 1)
    timed("get_user(1)  again (hit)", get_user, 1)
    timed("get_user(user_id=1)  same key (hit)", lambda: get_user(user_id=1))
    timed("get_user(99) missing row: None", get_user, 99)
    timed("get_user(99) None is cached too", get_user, 99)
    print(f"  database queries so far: {queries}")

    print("\n2. 1,000 more reads of two users")
    timed("get_user(2)  first call (miss)", get_user, 2)
    started = time.perf_counter()
    for i in range(1000):
        get_user(1 + i % 2)
    elapsed = time.perf_counter() - started
    print(
        f"  took {elapsed * 1000:.1f} ms ({elapsed * 1e6 / 1000:.2f} µs per call); "
        f"database queries: {queries} (without the cache: {queries + 1000})"
    )

    print("\n3. invalidation after a write")
    DATABASE[1]["name"] = "Ada Lovelace"
    get_user.invalidate(1)
    timed("get_user(1)  after invalidate", get_user, 1)

    print("\n4. the same decorator on async def")

    async def rates() -> None:
        for label in ("first call (miss)", "again (hit)"):
            started = time.perf_counter()
            rate = await exchange_rate("EUR")
            elapsed = (time.perf_counter() - started) * 1000
            print(f"  {'exchange_rate(EUR) ' + label:<34} {elapsed:9.3f} ms  -> {rate}")

    asyncio.run(rates())

    print("\n5. the key/value API")
    cache.set("greeting", {"text": "hello"}, ttl=10)
    print(f"  cache.get('greeting') -> {cache.get('greeting')}")
    print(f"  cache.ttl('greeting') -> {cache.ttl('greeting'):.1f} s")
    print(f"  cache.incr('visits')  -> {cache.incr('visits')}")

    print("\n6. what the cache did: cache.stats()")
    stats = cache.stats()
    for name in ("hits", "misses", "hit_rate", "sets", "errors", "entries", "circuit"):
        value = stats.get(name)
        shown = f"{value:.1%}" if name == "hit_rate" else value
        print(f"  {name:<10} {shown}")

    print("\n7. on Redis, the command line: cachekit (or python -m cachekit)")
    print("  cachekit --url redis://HOST:6379/0 --prefix shop COMMAND [--json]")
    for command, text in COMMANDS.items():
        print(f"  {command:<13} {text}")

    print(
        f"\nstats: {stats['hits']} hits, {stats['misses']} misses, "
        f"hit rate {stats['hit_rate']:.1%}, {stats['entries']} entries"
    )
    print("\nSwap in Redis with Cache('redis://127.0.0.1:6379/0'): the code above is unchanged.")


if __name__ == "__main__":
    main()
