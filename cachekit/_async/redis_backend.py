"""Redis backend over redis-py's asyncio client.

This file is the source: ``cachekit/_sync/redis_backend.py`` is generated from it by
``scripts/unasync.py`` (CI fails when they drift). Edit here, then run the script.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .._sentinel import MISSING
from ..backends.redis import AsyncClientProvider, translate_error

__all__ = ["AsyncRedisBackend"]

_SCAN_COUNT = 1000
_DELETE_BATCH = 500
_LOCK_POLL = 0.05  # redis-py's Lock polls while blocked in acquire()


def _ms(ttl: float) -> int:
    return max(1, int(ttl * 1000))


class AsyncRedisBackend:
    """Entries are plain Redis strings; bulk operations take one round trip."""

    local = False
    translate_error = staticmethod(translate_error)

    def __init__(self, clients: AsyncClientProvider) -> None:
        self.clients = clients

    async def get(self, key: str) -> Any:
        value = await self.clients.get().get(key)
        return MISSING if value is None else value

    async def get_many(self, keys: Sequence[str]) -> list[Any]:
        if not keys:
            return []
        values = await self.clients.get().mget(keys)
        return [MISSING if value is None else value for value in values]

    async def set(self, key: str, value: Any, ttl: float | None) -> bool:
        if ttl is None:
            return bool(await self.clients.get().set(key, value))
        return bool(await self.clients.get().set(key, value, px=_ms(ttl)))

    async def add(self, key: str, value: Any, ttl: float | None) -> bool:
        px = None if ttl is None else _ms(ttl)
        return bool(await self.clients.get().set(key, value, px=px, nx=True))

    async def set_many(self, items: Mapping[str, Any], ttl: float | None) -> None:
        if not items:
            return
        client = self.clients.get()
        if ttl is None:
            await client.mset(dict(items))
            return
        px = _ms(ttl)
        async with client.pipeline(transaction=False) as pipe:
            for key, value in items.items():
                pipe.set(key, value, px=px)
            await pipe.execute()

    async def delete(self, key: str) -> bool:
        return bool(await self.clients.get().delete(key))

    async def delete_many(self, keys: Sequence[str]) -> int:
        if not keys:
            return 0
        return int(await self.clients.get().delete(*keys))

    async def exists(self, key: str) -> bool:
        return bool(await self.clients.get().exists(key))

    async def ttl(self, key: str) -> Any:
        millis = await self.clients.get().pttl(key)
        if millis == -2:
            return MISSING
        return None if millis == -1 else millis / 1000

    async def expire(self, key: str, ttl: float | None) -> bool:
        client = self.clients.get()
        if ttl is None:
            return bool(await client.persist(key)) or bool(await client.exists(key))
        return bool(await client.pexpire(key, _ms(ttl)))

    async def incr(self, key: str, delta: int, ttl: float | None) -> int:
        client = self.clients.get()
        if ttl is None:
            return int(await client.incrby(key, delta))
        # SET NX gives a new counter its expiry; INCRBY keeps whatever expiry the key has.
        async with client.pipeline(transaction=True) as pipe:
            pipe.set(key, b"0", px=_ms(ttl), nx=True)
            pipe.incrby(key, delta)
            _, value = await pipe.execute()
        return int(value)

    async def delete_pattern(self, pattern: str) -> int:
        client = self.clients.get()
        deleted = 0
        batch: list[Any] = []
        async for key in client.scan_iter(match=pattern, count=_SCAN_COUNT):
            batch.append(key)
            if len(batch) >= _DELETE_BATCH:
                deleted += int(await client.unlink(*batch))
                batch = []
        if batch:
            deleted += int(await client.unlink(*batch))
        return deleted

    async def ping(self) -> bool:
        return bool(await self.clients.get().ping())

    def lock(self, key: str, ttl: float) -> Any:
        """redis-py's Lock: a token under ``key`` with PX ``ttl``, released by a
        compare-and-delete script (bound to this thread's / loop's client)."""
        return self.clients.get().lock(key, timeout=ttl, sleep=_LOCK_POLL, thread_local=False)

    async def close(self) -> None:
        await self.clients.close()
