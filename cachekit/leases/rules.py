"""Leases: a load that started before an invalidation never stores (the stale write-back).

The race (the one memcache leases solve, Nishtala et al., NSDI 2013)::

    loader: miss, reads the database (old row) ............ stores the old row
    writer:                updates the row, invalidate()

Without a lease the old row is then served for the whole TTL. cachekit gives every load a
lease that an invalidation revokes, and a load stores only while its lease is valid:

- **The lease is the load's start time** (``since``, ``time.monotonic()`` just before the
  function is called), so taking one costs nothing: no extra round trip on the miss path.
- **An invalidation leaves a mark.** ``delete``, ``delete_many``, ``.invalidate()``,
  ``@cache.invalidates``, ``invalidate_tags`` and a write-through ``delete`` mark each key
  they delete. On Redis the mark is a companion key of the entry (same cluster slot)
  holding the server's time, written with a lifetime of :data:`MARK_LIFETIME` in the same
  round trip as the ``DEL``; in process it is a timestamp in :class:`LocalMarks`.
- **A load's store checks the mark atomically** (one Lua script on Redis, a lock in
  process): the store is dropped if the key was invalidated after the load started. On
  Redis only durations are compared, in microseconds (the mark's age on the server's
  clock, the load's age on the client's monotonic clock, plus a 5 ms margin for the
  request's travel), so the two clocks need not agree; a store whose request took longer
  than the margin to run is undone if the comparison was close. A lock holder's lease
  begins on the server (``BEGIN`` returns its TIME) and is compared exactly.
- **With ``lock=True`` the lock token is the lease too**: the holder stores (in the script
  that releases the lock) only while the lock still holds its token, so a holder slower
  than ``lock_ttl`` cannot overwrite what the next holder stored.

A load older than :data:`MARK_LIFETIME` cannot know whether it was invalidated (the mark
may have expired), so it returns its value without storing it. Explicit writes
(``set``, ``@cache.updates``) are not loads: they store unconditionally.
"""

from __future__ import annotations

import math
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

__all__ = ["MARK_LIFETIME", "Lease", "LocalMarks", "elapsed_us", "local_marks"]

T = TypeVar("T")

MARK_LIFETIME = 60.0
"""Seconds an invalidation mark is kept: loads slower than this are not stored. On Redis
a mark is one small key per invalidated entry, so this bounds what invalidations cost in
memory (a minute's worth of deleted keys)."""


class Lease:
    """What a load's store must still hold: no invalidation since ``since``
    (``time.monotonic()`` before the function was called), and, with ``lock=True`` on
    Redis, the lock ``lock_key`` still holding ``token``."""

    __slots__ = ("lock_key", "since", "start", "token")

    def __init__(
        self,
        since: float,
        lock_key: str | None = None,
        token: bytes | None = None,
        start: bytes | None = None,
    ) -> None:
        self.since = since
        self.lock_key = lock_key
        self.token = token
        # the server's TIME when the lock was taken ("seconds microseconds"), if the lease
        # began on the server: then compared exactly with the marks, on the same clock
        self.start = start

    @classmethod
    def now(cls) -> Lease:
        return cls(time.monotonic())


_LOCAL_LIMIT = 100_000  # marks kept in process before old ones are dropped


def elapsed_us(since: float, now: float | None = None) -> int:
    """Microseconds since ``since`` (monotonic), rounded up: a mark made at the same
    microsecond as the load started counts as after it (the safe side)."""
    now = time.monotonic() if now is None else now
    return max(0, math.ceil((now - since) * 1_000_000))


class LocalMarks:
    """Invalidation marks of an in-process backend, and the lock that makes
    "check the mark, then store" atomic with "mark, then delete"."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock  # the clock loads take ``since`` from
        self.lock = threading.Lock()
        self._marks: dict[str, float] = {}
        # loads that started before this may have lost their mark (dropped to stay bounded)
        self._floor = -math.inf

    def revoke(self, keys: Iterable[str], delete: Callable[[], T]) -> T:
        """Mark ``keys`` invalidated now and run ``delete`` (under the lock)."""
        with self.lock:
            now = self.clock()
            marks = self._marks
            for key in keys:
                marks[key] = now
            if len(marks) > _LOCAL_LIMIT:
                self._shrink(now)
            return delete()

    def revoke_all(self) -> None:
        """Every load that started before now is refused its store (``clear()``,
        ``invalidate_all()``, ``delete_pattern()``: keys no mark could name)."""
        with self.lock:
            self._floor = max(self._floor, self.clock())

    def store(
        self,
        key: str,
        since: float,
        store: Callable[[], T],
        refused: T,
        tags: Iterable[str] = (),
    ) -> T:
        """Run ``store`` if neither ``key`` nor any of its ``tags`` (tag set keys) was
        invalidated after ``since``; else ``refused``."""
        with self.lock:
            if not self.allows(key, since) or not all(self.allows(t, since) for t in tags):
                return refused
            return store()

    def allows(self, key: str, since: float) -> bool:
        if since <= self._floor or self.clock() - since >= MARK_LIFETIME:
            return False
        mark = self._marks.get(key)
        return mark is None or mark < since

    def _shrink(self, now: float) -> None:
        # drop marks older than the lifetime first (no load that old may store anyway);
        # if that is not enough, forget them all and refuse loads that began before now
        cutoff = now - MARK_LIFETIME
        self._marks = {k: t for k, t in self._marks.items() if t > cutoff}
        if len(self._marks) > _LOCAL_LIMIT // 2:
            self._marks.clear()
            self._floor = now


_local: weakref.WeakKeyDictionary[Any, LocalMarks] = weakref.WeakKeyDictionary()
_unweakable: dict[int, tuple[Any, LocalMarks]] = {}  # backends with no __weakref__ slot
_local_lock = threading.Lock()


def local_marks(backend: Any) -> LocalMarks:
    """The marks of an in-process backend, shared by every cache over it."""
    try:
        marks = _local.get(backend)
    except TypeError:  # not weakly referenceable: kept (with its backend) for good
        with _local_lock:
            kept = _unweakable.get(id(backend))
            if kept is None:
                kept = _unweakable[id(backend)] = (backend, LocalMarks())
            return kept[1]
    if marks is None:
        with _local_lock:
            marks = _local.get(backend)
            if marks is None:
                marks = _local[backend] = LocalMarks()
    return marks
