"""Redis backend over redis-py's client.

GENERATED from ``cachekit/_async/redis_backend.py`` by
``scripts/unasync.py`` -- do not edit; edit the async source and run the script.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .._sentinel import MISSING
from ..backends.redis import SyncClientProvider, translate_error

__all__ = ["RedisBackend"]

_SCAN_COUNT = 1000
_DELETE_BATCH = 500
_LOCK_POLL = 0.05  # redis-py's Lock polls while blocked in acquire()


def _ms(ttl: float) -> int:
    return max(1, int(ttl * 1000))


class RedisBackend:
    """Entries are plain Redis strings; bulk operations take one round trip."""

    local = False
    translate_error = staticmethod(translate_error)

    def __init__(self, clients: SyncClientProvider) -> None:
        self.clients = clients

    def get(self, key: str) -> Any:
        value = self.clients.get().get(key)
        return MISSING if value is None else value

    def get_many(self, keys: Sequence[str]) -> list[Any]:
        if not keys:
            return []
        values = self.clients.get().mget(keys)
        return [MISSING if value is None else value for value in values]

    def set(self, key: str, value: Any, ttl: float | None) -> bool:
        if ttl is None:
            return bool(self.clients.get().set(key, value))
        return bool(self.clients.get().set(key, value, px=_ms(ttl)))

    def add(self, key: str, value: Any, ttl: float | None) -> bool:
        px = None if ttl is None else _ms(ttl)
        return bool(self.clients.get().set(key, value, px=px, nx=True))

    def set_many(self, items: Mapping[str, Any], ttl: float | None) -> None:
        if not items:
            return
        client = self.clients.get()
        if ttl is None:
            client.mset(dict(items))
            return
        px = _ms(ttl)
        with client.pipeline(transaction=False) as pipe:
            for key, value in items.items():
                pipe.set(key, value, px=px)
            pipe.execute()

    def delete(self, key: str) -> bool:
        return bool(self.clients.get().delete(key))

    def delete_many(self, keys: Sequence[str]) -> int:
        if not keys:
            return 0
        return int(self.clients.get().delete(*keys))

    def exists(self, key: str) -> bool:
        return bool(self.clients.get().exists(key))

    def ttl(self, key: str) -> Any:
        millis = self.clients.get().pttl(key)
        if millis == -2:
            return MISSING
        return None if millis == -1 else millis / 1000

    def expire(self, key: str, ttl: float | None) -> bool:
        client = self.clients.get()
        if ttl is None:
            return bool(client.persist(key)) or bool(client.exists(key))
        return bool(client.pexpire(key, _ms(ttl)))

    def incr(self, key: str, delta: int, ttl: float | None) -> int:
        client = self.clients.get()
        if ttl is None:
            return int(client.incrby(key, delta))
        # SET NX gives a new counter its expiry; INCRBY keeps whatever expiry the key has.
        with client.pipeline(transaction=True) as pipe:
            pipe.set(key, b"0", px=_ms(ttl), nx=True)
            pipe.incrby(key, delta)
            _, value = pipe.execute()
        return int(value)

    def delete_pattern(self, pattern: str) -> int:
        client = self.clients.get()
        deleted = 0
        batch: list[Any] = []
        for key in client.scan_iter(match=pattern, count=_SCAN_COUNT):
            batch.append(key)
            if len(batch) >= _DELETE_BATCH:
                deleted += int(client.unlink(*batch))
                batch = []
        if batch:
            deleted += int(client.unlink(*batch))
        return deleted

    def ping(self) -> bool:
        return bool(self.clients.get().ping())

    def lock(self, key: str, ttl: float) -> Any:
        """redis-py's Lock: a token under ``key`` with PX ``ttl``, released by a
        compare-and-delete script (bound to this thread's / loop's client)."""
        return self.clients.get().lock(key, timeout=ttl, sleep=_LOCK_POLL, thread_local=False)

    def close(self) -> None:
        self.clients.close()
