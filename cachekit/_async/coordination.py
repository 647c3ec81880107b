"""Stampede coordination across processes on Redis: a lock per entry and a wake-up list.

This file is the source: ``cachekit/_sync/coordination.py`` is generated from it by
``scripts/unasync.py`` (CI fails when they drift). Edit here, then run the script.

Protocol (keys from :func:`cachekit._stampede.companion_key`, all in the entry's slot):

1. ``BEGIN`` (one script): the entry if it landed meanwhile; else the current holder's
   token; else take the lock (``SET lock token PX ttl``) and lead.
2. The leader computes, then ``FINISH`` (one script): store the entry, delete the lock if
   it still holds our token (compare-and-delete), ``RPUSH`` the outcome (``v`` + entry
   bytes, or ``e``: the computation failed, ``x``: not encodable) onto the holder's done
   list, with a short expiry.
3. Waiters block on ``BLMOVE done done LEFT LEFT``: the element is popped and pushed
   back in one step, so the single element wakes every blocked waiter in turn, and each
   gets the value itself (no extra ``GET``). A wait is sliced below the client's socket
   timeout; after a slice the waiter asks ``BEGIN`` again, which is how a crashed
   holder's expired lock is noticed and taken over.
"""

from __future__ import annotations

from typing import Any

__all__ = ["AsyncRedisCoordinator", "coordinator_for"]

_BEGIN = """
if ARGV[3] == '1' then
  local entry = redis.call('GET', KEYS[1])
  if entry then return {1, entry} end
end
local holder = redis.call('GET', KEYS[2])
if holder then return {3, holder} end
redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
return {2, ''}
"""

_FINISH = """
if ARGV[5] == '1' then
  if ARGV[6] == '' then
    redis.call('SET', KEYS[1], ARGV[4])
  else
    redis.call('SET', KEYS[1], ARGV[4], 'PX', ARGV[6])
  end
end
if redis.call('GET', KEYS[2]) == ARGV[1] then redis.call('DEL', KEYS[2]) end
redis.call('RPUSH', KEYS[3], ARGV[2] .. ARGV[4])
redis.call('PEXPIRE', KEYS[3], ARGV[3])
return 1
"""

VALUE, ACQUIRED, HELD = 1, 2, 3


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))


class AsyncRedisCoordinator:
    def __init__(self, clients: Any) -> None:
        self.clients = clients
        self._begin: Any = None
        self._finish: Any = None

    def _scripts(self, client: Any) -> tuple[Any, Any]:
        if self._begin is None:
            self._begin = client.register_script(_BEGIN)
            self._finish = client.register_script(_FINISH)
        return self._begin, self._finish

    def socket_timeout(self) -> float | None:
        pool = getattr(self.clients.get(), "connection_pool", None)
        kwargs = getattr(pool, "connection_kwargs", None) or {}
        timeout = kwargs.get("socket_timeout")
        return None if timeout is None else float(timeout)

    async def abegin(
        self, key: str, lock_key: str, token: bytes, ttl: float, recheck: bool
    ) -> tuple[int, bytes]:
        """``(VALUE, entry)``, ``(ACQUIRED, b"")`` or ``(HELD, holder token)``."""
        client = self.clients.get()
        begin, _ = self._scripts(client)
        kind, payload = await begin(
            keys=[key, lock_key], args=[token, _ms(ttl), "1" if recheck else "0"], client=client
        )
        return int(kind), bytes(payload)

    async def afinish(
        self,
        key: str,
        lock_key: str,
        done_key: str,
        token: bytes,
        outcome: bytes,
        entry: bytes,
        store: bool,
        ttl: float | None,
        linger: float,
    ) -> None:
        """Store (if ``store``), release our lock, and wake the waiters with the outcome."""
        client = self.clients.get()
        _, finish = self._scripts(client)
        await finish(
            keys=[key, lock_key, done_key],
            args=[
                token,
                outcome,
                _ms(linger),
                entry,
                "1" if store else "0",
                "" if ttl is None else _ms(ttl),
            ],
            client=client,
        )

    async def atry_lock(self, lock_key: str, token: bytes, ttl: float) -> bool:
        return bool(await self.clients.get().set(lock_key, token, nx=True, px=_ms(ttl)))

    async def await_done(self, done_key: str, timeout: float) -> bytes | None:
        """The holder's outcome, or None if it did not come within ``timeout``."""
        got = await self.clients.get().blmove(done_key, done_key, timeout, "LEFT", "LEFT")
        return None if got is None else bytes(got)


def coordinator_for(backend: Any) -> AsyncRedisCoordinator | None:
    """A coordinator for backends that have Redis clients; None for in-process ones."""
    clients = getattr(backend, "clients", None)
    if clients is None or getattr(backend, "local", False):
        return None
    return AsyncRedisCoordinator(clients)
