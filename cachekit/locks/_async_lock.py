"""``cache.lock(...)`` for async callers: ``aacquire`` / ``arelease`` / ``async with``.

This file is the source: ``cachekit/locks/_sync_lock.py`` is generated from it by
``scripts/unasync.py`` (CI fails when they drift). Edit here, then run the script.
The state and the error translation are shared, in :class:`cachekit.locks.lock.CacheLock`.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from ..core.concurrency import _asleep
from ..core.policy import DEFAULT
from ..exceptions import LockNotOwnedError

__all__ = ["AsyncLockOps"]


class AsyncLockOps:
    # provided by CacheLock
    if TYPE_CHECKING:
        _cache: Any
        _held: Any
        key: str
        ttl: float
        timeout: float | None
        blocking: bool

        def _new_token(self) -> bytes: ...
        def _translated(self, exc: Exception) -> Exception: ...
        def _timed_out(self, waited: float | None) -> Exception: ...

    async def aacquire(self, blocking: bool | None = None, timeout: Any = DEFAULT) -> bool:
        """Take the lock. Blocking (the default): wait up to ``timeout`` seconds (None:
        forever), then raise :class:`~cachekit.LockTimeoutError`. ``blocking=False``:
        one attempt, returning False if someone else holds it."""
        block = self.blocking if blocking is None else blocking
        waited = self.timeout if timeout is DEFAULT else timeout
        lock = self._cache._abackend.lock(self.key, self.ttl)
        token = self._new_token()
        deadline = None if waited is None else time.monotonic() + waited
        try:
            got = await lock.acquire(blocking=block, blocking_timeout=waited, token=token)
            # redis-py's Lock gives up as soon as its next poll would land past
            # blocking_timeout, up to one poll early (timeout=0.3 returned after ~0.25 s):
            # sleep what is left and try once more at the deadline.
            while block and not got and deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                await _asleep(left)
                got = await lock.acquire(blocking=False, token=token)
        except Exception as exc:
            raise self._translated(exc) from exc
        if got:
            self._held = lock
            return True
        if block:
            raise self._timed_out(waited)
        return False

    async def arelease(self) -> None:
        """Give the lock back; :class:`~cachekit.LockNotOwnedError` if this owner does not
        hold it (never taken, released already, or expired and taken by someone else)."""
        lock, self._held = self._held, None
        if lock is None:
            raise LockNotOwnedError(f"cannot release lock {self.key!r}: not held by this owner")
        try:
            await lock.release()
        except Exception as exc:
            raise self._translated(exc) from exc

    async def aextend(self, additional_time: float, replace_ttl: bool = False) -> bool:
        """Add ``additional_time`` seconds to the lock's TTL (or set the TTL to it)."""
        lock = self._held
        if lock is None:
            raise LockNotOwnedError(f"cannot extend lock {self.key!r}: not held by this owner")
        try:
            return bool(await lock.extend(additional_time, replace_ttl))
        except Exception as exc:
            raise self._translated(exc) from exc

    async def alocked(self) -> bool:
        """Whether anyone holds the lock now."""
        lock = self._held or self._cache._abackend.lock(self.key, self.ttl)
        try:
            return bool(await lock.locked())
        except Exception as exc:
            raise self._translated(exc) from exc

    async def aowned(self) -> bool:
        """Whether this owner holds the lock now (False once its TTL ran out)."""
        lock = self._held
        if lock is None:
            return False
        try:
            return bool(await lock.owned())
        except Exception as exc:
            raise self._translated(exc) from exc

    async def __aenter__(self) -> Any:
        await self.aacquire()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.arelease()
