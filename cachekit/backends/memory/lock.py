"""Locks for the memory backend: redis-py's ``Lock`` semantics, in-process.

A lock is ``key -> (token, deadline)`` in a table shared by every lock object of one
:class:`~cachekit.backends.memory.MemoryBackend`. As on Redis, a lock always expires (the
TTL bounds a holder that never releases) and only the token that took it may release or
extend it. Waiters are woken by the release, or wake at the holder's deadline: no polling.
The objects answer to the same calls as redis-py's ``Lock`` (``acquire(blocking=,
blocking_timeout=, token=)``, ``release``, ``extend``, ``locked``, ``owned``) so the
cache's lock wrapper drives both the same way. The lock objects are in ``_async_lock.py``
(and its generated twin ``_sync_lock.py``); the table they share is here.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from ...core.concurrency import Notifier
from ...exceptions import LockError, LockNotOwnedError

__all__ = ["LockTable", "MemoryLockBase"]


class LockTable:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._held: dict[str, tuple[bytes, float]] = {}
        self._lock = threading.Lock()
        self.released = Notifier()

    def try_acquire(self, key: str, token: bytes, ttl: float) -> bool:
        now = self.clock()
        with self._lock:
            held = self._held.get(key)
            if held is not None and held[1] > now:
                return False
            self._held[key] = (token, now + ttl)
            return True

    def holder(self, key: str) -> tuple[bytes, float] | None:
        held = self._held.get(key)
        if held is None or held[1] <= self.clock():
            return None
        return held

    def seconds_left(self, key: str) -> float:
        held = self.holder(key)
        return 0.0 if held is None else held[1] - self.clock()

    def release(self, key: str, token: bytes) -> None:
        with self._lock:
            held = self._held.get(key)
            if held is None or held[0] != token or held[1] <= self.clock():
                raise LockNotOwnedError(f"cannot release lock {key!r}: not held by this owner")
            del self._held[key]
        self.released.notify_all()

    def extend(self, key: str, token: bytes, seconds: float, replace: bool) -> None:
        now = self.clock()
        with self._lock:
            held = self._held.get(key)
            if held is None or held[0] != token or held[1] <= now:
                raise LockNotOwnedError(f"cannot extend lock {key!r}: not held by this owner")
            deadline = now + seconds if replace else held[1] + seconds
            self._held[key] = (token, deadline)


class MemoryLockBase:
    """What the sync and async lock objects share (the calls they make are in
    ``_async_lock.py``, and its generated sync twin)."""

    def __init__(self, table: LockTable, key: str, ttl: float) -> None:
        self.table = table
        self.name = key
        self.timeout = ttl
        self.token: bytes | None = None

    def _start(self, token: str | bytes | None) -> bytes:
        if token is None:
            raise LockError("a memory lock needs an owner token")
        return token.encode() if isinstance(token, str) else token

    def _wait_time(self, deadline: float | None) -> float | None:
        """Until the holder's TTL runs out, or our own deadline, whichever is first."""
        left = self.table.seconds_left(self.name)
        if deadline is None:
            return left
        return max(0.0, min(left, deadline - self.table.clock()))

    def _release(self) -> None:
        if self.token is None:
            raise LockError("cannot release an unlocked lock")
        token, self.token = self.token, None
        self.table.release(self.name, token)

    def _extend(self, additional_time: float, replace_ttl: bool) -> bool:
        if self.token is None:
            raise LockError("cannot extend an unlocked lock")
        self.table.extend(self.name, self.token, additional_time, replace_ttl)
        return True

    def _owned(self) -> bool:
        held = self.table.holder(self.name)
        return held is not None and self.token is not None and held[0] == self.token
