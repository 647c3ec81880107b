"""Leases: a load that started before an invalidation never stores (the stale write-back).

The race (the one memcache leases solve, Nishtala et al., NSDI 2013)::

    loader: miss, reads the database (old row) ............ stores the old row
    writer:                updates the row, invalidate()

Without a lease the old row is then served for the whole TTL. cachekit gives every load a
lease that an invalidation revokes, and a load stores only while its lease is valid. The
lease is the load's start (``since``, ``time.monotonic()`` just before the function is
called): taking one costs nothing, no extra round trip on the miss path.

**On Redis an invalidation lives in the entry's own key.** ``delete``, ``delete_many``,
``.invalidate()``, ``@cache.invalidates``, ``invalidate_tags`` and a write-through
``delete`` replace each key with a *tombstone* (``SET key <tombstone> PX``, kept for
:data:`TOMBSTONE_LIFETIME`): :data:`TOMBSTONE_HEAD` and a random token, an encoding no
entry can have (every codec frame starts with a byte from 0x01 up, a bare counter with a
digit or ``-``; ``serializer="raw"`` bytes are framed too). Every reader treats a
tombstone as absent (the Redis backend's ``get``, ``get_many``, ``exists``, ``ttl``,
``expire``, ``incr``, ``add``, ``clear``; the near cache's L1; the lock's ``BEGIN``), and
"how many existed" counts no tombstone. Then a load's store needs no clock:

- **read found the key absent**: ``SET key entry PX ttl NX`` (the miss path's only write:
  GET + SET, as any cache). An invalidation after the read left a tombstone, so NX refuses.
- **read found a tombstone** (just after an invalidation; rare): a compare-and-set script
  stores only while the key still holds *that* tombstone (or nothing). Tombstones are
  unique and never come back once replaced, so the key held it from the read until the
  store: nothing was invalidated in between. The reads of a cache note the tombstones they
  saw (:class:`TombstoneLog`, bounded: a forgotten one only makes a store refused).
- **a lock holder** (``lock=True``, and the refreshes of ``stale_ttl``/``early_refresh``)
  stores in the script that releases the lock, only while the lock holds its token and
  the key holds what it held when the lock was taken (``BEGIN`` returns it; absent is
  fine too): a holder slower than ``lock_ttl`` cannot overwrite what the next holder
  stored, and an invalidation meanwhile (a new tombstone) wins.
- **a tagged load** stores by the same compare-and-set next to its tags' registration;
  a tag's invalidation leaves a mark on the tag (its set is gone, and a load whose key
  was not registered yet is in no set): a tagged store is undone if a tag was invalidated
  after the load started (marks hold the server's time; see
  :mod:`cachekit.stampede._async_coordination`).

In process (the memory backend) the invalidation is a timestamp in :class:`LocalMarks`,
checked under one lock with the store. Which of the two a cache uses is decided once, when
it is made (:mod:`cachekit.leases.stores`).

A load older than :data:`MARK_LIFETIME` cannot know whether it was invalidated (the
tombstone may have expired), so it returns its value without storing it; a tombstone is
kept :data:`TOMBSTONE_SLACK` longer than that, for the store's request in transit. A
tombstone replaced by a later write (an explicit ``set``, another load's store) no longer
guards: if that value is itself gone (expired, evicted) before an older load stores, the
older load may store (a value shorter-lived than a load: see the README). Explicit writes
(``set``, ``@cache.updates``) are not loads: they store unconditionally.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

from ..core.sentinel import MISSING

__all__ = [
    "MARK_LIFETIME",
    "TOMBSTONE_HEAD",
    "TOMBSTONE_LIFETIME",
    "GUARDED_SET",
    "REVOKE",
    "Lease",
    "LocalMarks",
    "TombstoneLog",
    "elapsed_us",
    "is_tombstone",
    "new_tombstone",
    "note_unserved",
    "queue_revoke",
]

T = TypeVar("T")

MARK_LIFETIME = 60.0
"""Seconds an invalidation mark is kept: loads slower than this are not stored. On Redis
a mark is one small key per invalidated entry, so this bounds what invalidations cost in
memory (a minute's worth of deleted keys)."""

TOMBSTONE_SLACK = 5.0
"""Seconds a tombstone outlives :data:`MARK_LIFETIME`: a load checks its age before its
store is sent, and the store reaches Redis a little later."""

TOMBSTONE_LIFETIME = MARK_LIFETIME + TOMBSTONE_SLACK

_TOMBSTONE_MS = int(TOMBSTONE_LIFETIME * 1000)

TOMBSTONE_HEAD = b"\x00ck:tombstone:"
"""How a tombstone begins: a NUL byte, which starts no codec frame (see
:mod:`cachekit.core.codec`), then a name for people reading Redis."""

TOMBSTONE_LUA = "'\\000ck:tombstone:'"
""":data:`TOMBSTONE_HEAD` as a Lua string literal (for the scripts that must see one)."""

LUA_IS_TOMBSTONE = f"""
local function is_tombstone(value)
  return type(value) == 'string' and string.sub(value, 1, {len(TOMBSTONE_HEAD)}) == {TOMBSTONE_LUA}
end
"""


# A load's store over what its read found (see the module docstring).
# KEYS[1] entry, KEYS[2] lock (or the entry again)
# ARGV[1] entry, ARGV[2] PX ms or '', ARGV[3] lock token or '' (then the lock must hold
# it), ARGV[4] what the read found and did not serve (a tombstone, an unusable entry) or
# '', ARGV[5] what the key held when the lock
# was taken ('+' and it; '-' or '': nothing). Stores if the key holds nothing, ARGV[4],
# or ARGV[5]'s; returns 1 if stored.
GUARDED_SET = """
if ARGV[3] ~= '' and redis.call('GET', KEYS[2]) ~= ARGV[3] then return 0 end
local held = redis.call('GET', KEYS[1])
if held and not ((ARGV[4] ~= '' and held == ARGV[4])
                 or ARGV[5] == '+' .. held) then
  return 0
end
if ARGV[2] == '' then
  redis.call('SET', KEYS[1], ARGV[1])
else
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
end
return 1
"""

# An invalidation: KEYS[1] becomes the tombstone ARGV[1] for ARGV[2] ms; 1 if an entry
# was there (not a tombstone: "how many existed" counts none)
REVOKE = f"""
local head = redis.pcall('GETRANGE', KEYS[1], 0, {len(TOMBSTONE_HEAD) - 1})
local existed = redis.call('EXISTS', KEYS[1])
if head == {TOMBSTONE_LUA} then existed = 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return existed
"""


def queue_revoke(batch: Any, key: Any, tombstone: bytes | None = None) -> None:
    """Queue the invalidation of one entry on a batch (:data:`REVOKE`, by its text: a batch
    of invalidations is not repeated); its reply is 1 if an entry was there."""
    batch.eval(REVOKE, 1, key, tombstone or new_tombstone(), _TOMBSTONE_MS)


def note_unserved(tombstones: Any, key: str, stored: Any) -> None:
    """A load's read found ``stored`` under ``key`` and did not serve it (corrupt, another
    shape, expired): the load may store over it (see :class:`TombstoneLog`)."""
    if tombstones is not None:
        tombstones.log.saw(key, stored)


def new_tombstone() -> bytes:
    """A tombstone with a token of its own (16 random bytes, hex): never written twice."""
    return TOMBSTONE_HEAD + os.urandom(16).hex().encode()


def is_tombstone(value: Any) -> bool:
    return type(value) is bytes and value.startswith(TOMBSTONE_HEAD)


_LOG_LIMIT = 10_000  # values remembered before all are forgotten
_LOG_BYTES = 16 << 20  # and bytes
_LOG_VALUE = 1 << 20  # a larger value is not remembered (its key's loads do not store)


class TombstoneLog:
    """What a cache's reads found in a key and did not serve: a tombstone, or an entry it
    could not use (corrupt, of another shape, past every serving window), each with when
    it was first seen (``time.monotonic()`` after the read), so that a load that began
    after that may store over it (a compare-and-set). Bounded: forgetting only makes such
    a store refused (one more miss).

    For a tombstone that is exact: tombstones are unique and never come back once
    replaced. An unusable entry could in principle be written again, byte for byte, after
    an invalidation (ABA); a load that started before that invalidation would then store.
    """

    __slots__ = ("_bytes", "seen")

    def __init__(self) -> None:
        # key -> (what a read found, when): a key absent here is the common case, which a
        # load's store checks inline (``key in log.seen``) before asking :meth:`before`
        self.seen: dict[str, tuple[bytes, float]] = {}
        self._bytes = 0

    def saw(self, key: str, value: bytes) -> None:
        seen = self.seen
        known = seen.get(key)
        if known is not None and known[0] == value:
            return  # the first sighting is the one that counts
        if type(value) is not bytes or len(value) > _LOG_VALUE:
            seen.pop(key, None)
            return
        if len(seen) >= _LOG_LIMIT or self._bytes > _LOG_BYTES:
            seen.clear()
            self._bytes = 0
        seen[key] = (value, time.monotonic())
        self._bytes += len(value)

    def absent(self, key: str, value: Any) -> Any:
        """MISSING for what a read of ``key`` found absent: nothing (``None``), or a
        tombstone (noted); ``value`` itself otherwise."""
        if value is None:
            return MISSING
        if not is_tombstone(value):
            return value
        self.saw(key, value)
        return MISSING

    def found(self, keys: Sequence[str], values: Iterable[Any]) -> list[Any]:
        """An ``MGET``'s replies, each through :meth:`absent`."""
        absent = self.absent
        return [value if value and value[0] else absent(key, value)
                for key, value in zip(keys, values)]  # fmt: skip

    def before(self, key: str, since: float) -> bytes | None:
        """What a read of ``key`` found and did not serve, no later than ``since``."""
        known = self.seen.get(key)
        if known is None or known[1] > since:
            return None
        return known[0]


class Lease:
    """What a load's store must still hold: no invalidation since ``since``
    (``time.monotonic()`` before the function was called), and, with ``lock=True`` on
    Redis, the lock ``lock_key`` still holding ``token`` and the key still holding what
    it held when the lock was taken (``held``: ``b"+"`` and that, or ``b"-"``: nothing)."""

    __slots__ = ("held", "lock_key", "since", "token")

    def __init__(
        self,
        since: float,
        lock_key: str | None = None,
        token: bytes | None = None,
        held: bytes | None = None,
    ) -> None:
        self.since = since
        self.lock_key = lock_key
        self.token = token
        self.held = held

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
