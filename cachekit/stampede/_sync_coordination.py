"""Stampede coordination across processes on Redis: a lock per entry and a wake-up list.

GENERATED from ``cachekit/stampede/_async_coordination.py`` by
``scripts/unasync.py`` -- do not edit; edit the async source and run the script.

Protocol (keys from :func:`cachekit.stampede.rules.companion_key`, all in the entry's slot):

1. ``BEGIN`` (one script): the entry if it landed meanwhile; else the current holder's
   token; else take the lock (``SET lock token PX ttl``) and lead.
2. The leader computes, then ``FINISH`` (one script): store the entry only while its lease
   holds (the lock still holds our token: a holder slower than its ``lock_ttl`` never
   overwrites the next holder's value; and the entry was not invalidated since the
   computation started, see :mod:`cachekit.leases.rules`), delete the lock if it still holds
   our token (compare-and-delete), ``RPUSH`` the outcome (``v`` + entry bytes, or ``e``:
   the computation failed, ``x``: not encodable) onto the holder's done list, with a
   short expiry.
3. Waiters block on ``BLMOVE done done LEFT LEFT``: the element is popped and pushed
   back in one step, so the single element wakes every blocked waiter in turn, and each
   gets the value itself (no extra ``GET``). A wait is sliced below the client's socket
   timeout; after a slice the waiter asks ``BEGIN`` again, which is how a crashed
   holder's expired lock is noticed and taken over.

Loads without the lock store through ``GUARDED_SET`` (the lease check alone), and
invalidations go through :func:`revoke` (mark, then delete, in one round trip).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

from ..backends import base
from ..leases.rules import MARK_LIFETIME, Lease, elapsed_us

__all__ = [
    "GUARDED_SET",
    "GUARDED_SET_SHA",
    "MARK",
    "MARK_AGE",
    "RedisCoordinator",
    "StoreCheck",
    "guarded_set",
    "revoke",
    "undo",
    "coordinator_for",
    "queue_mark",
    "store_args",
    "tag_check_args",
]

# On acquiring, the lock holder also gets the server's TIME: its lease starts there, on
# the same clock as the invalidation marks (an exact comparison, see _LEASE).
_BEGIN = """
if ARGV[3] == '1' then
  local entry = redis.call('GET', KEYS[1])
  if entry then return {1, entry} end
end
local holder = redis.call('GET', KEYS[2])
if holder then return {3, holder} end
redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
local now = redis.call('TIME')
return {2, now[1] .. ' ' .. now[2]}
"""

# Whether a load may still store (see cachekit.leases.rules). An invalidation mark holds the
# server's TIME when it was made ("seconds microseconds"). A lease that began on the
# server (``start``: a lock holder's, from BEGIN) is compared with the mark exactly. A
# plain load only knows how long ago it began (``since_us``, the client's monotonic
# clock): it compares that with the mark's age, and returns the age so that the client
# can tell whether its own request's delay makes the answer doubtful (the age is -1 when
# there is nothing to doubt). The common case, a plain load of an entry never marked,
# reads no clock: the script is GET mark, SET (the miss path's one extra cost on Redis).
_LEASE = """
local function micros(text)
  local s, us = string.match(text, '^(%d+) (%d+)$')
  if not s then return nil end
  return tonumber(s) * 1000000 + tonumber(us)
end
local function lease_ok(mark_key, since_us, start, lifetime_us)
  local mark = redis.call('GET', mark_key)
  if start == '' then  -- a plain load: the clock only matters if there is a mark
    if since_us >= lifetime_us then return false, -1 end
    if not mark then return true, -1 end
  end
  local clock = redis.call('TIME')
  local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
  local marked = mark and (micros(mark) or now)
  if start ~= '' then
    local begun = micros(start) or 0
    if now - begun >= lifetime_us then return false, -1 end
    return (not marked) or marked < begun, -1
  end
  local age = now - marked
  return age >= since_us, age
end
"""

# KEYS[1] entry, KEYS[2] lock, KEYS[3] done list, KEYS[4] invalidation mark
# ARGV[1] token, ARGV[2] outcome, ARGV[3] linger ms, ARGV[4] entry, ARGV[5] store?,
# ARGV[6] PX ms or '', ARGV[7] us since the computation started, ARGV[8] mark lifetime us,
# ARGV[9] the lease's server start ('' if none). Returns {stored, mark age}.
_FINISH = (
    _LEASE
    + """
local mine = redis.call('GET', KEYS[2]) == ARGV[1]
local stored, age = 0, -1
if ARGV[5] == '1' and mine then
  local ok
  ok, age = lease_ok(KEYS[4], tonumber(ARGV[7]), ARGV[9], tonumber(ARGV[8]))
  if ok then
    if ARGV[6] == '' then
      redis.call('SET', KEYS[1], ARGV[4])
    else
      redis.call('SET', KEYS[1], ARGV[4], 'PX', ARGV[6])
    end
    stored = 1
  end
end
if mine then redis.call('DEL', KEYS[2]) end
if ARGV[5] == '1' and stored == 0 then
  -- our lease was revoked: the value may be what an invalidation replaced, and some
  -- waiters may have come after it; they compute themselves
  redis.call('RPUSH', KEYS[3], 'x')
else
  redis.call('RPUSH', KEYS[3], ARGV[2] .. ARGV[4])
end
redis.call('PEXPIRE', KEYS[3], ARGV[3])
return {stored, age}
"""
)

# A load's store: only if the entry was not invalidated since the load started, and,
# when ARGV[5] is a token, only while the lock holds it.
# KEYS[1] entry, KEYS[2] invalidation mark, KEYS[3] lock
# ARGV[1] entry, ARGV[2] PX ms or '', ARGV[3] us since the load started,
# ARGV[4] mark lifetime us, ARGV[5] lock token or '', ARGV[6] the lease's server start
# or ''. Returns {stored, mark age}.
GUARDED_SET = (
    _LEASE
    + """
if ARGV[5] ~= '' and redis.call('GET', KEYS[3]) ~= ARGV[5] then return {0, -1} end
local ok, age = lease_ok(KEYS[2], tonumber(ARGV[3]), ARGV[6], tonumber(ARGV[4]))
if not ok then return {0, age} end
if ARGV[2] == '' then
  redis.call('SET', KEYS[1], ARGV[1])
else
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
end
return {1, age}
"""
)
GUARDED_SET_SHA = base.script_sha(GUARDED_SET)

# An invalidation mark: KEYS[1] gets the server's TIME ("seconds microseconds"), PX ARGV[1]
MARK = """
local now = redis.call('TIME')
redis.call('SET', KEYS[1], now[1] .. ' ' .. now[2], 'PX', ARGV[1])
return 1
"""

# Whether a tag's mark allows a tagged load's store (checked next to the store): as the
# lease check, KEYS[1] the tag's mark, ARGV as _LEASE's since_us, start, lifetime_us.
# Returns {ok, mark age}.
MARK_AGE = (
    _LEASE
    + """
local ok, age = lease_ok(KEYS[1], tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3]))
return {ok and 1 or 0, age}
"""
)

# Undo a store that turned out doubtful: delete the entry if it is still ours
_UNDO = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


DOUBT_MARGIN_US = 5_000
"""A plain load's store is refused if the entry's invalidation mark is less than the
load's age plus this (5 ms) old: the load may have begun before the invalidation, its age
being measured on this side before the request travels (see :class:`StoreCheck`)."""


class StoreCheck:
    """One guarded store in flight: the load's age is measured here, just before the
    request is sent, but the script runs a little later (the request in transit, or this
    thread descheduled). A mark whose age falls within that delay of the load's age may
    be from just after the load started: the store is then undone (:func:`undo`).
    """

    __slots__ = ("measured_at", "since_us", "start")

    def __init__(self, lease: Lease) -> None:
        self.measured_at = now = time.monotonic()
        self.start = start = lease.start or b""  # a lease begun on the server: exact
        # a load's age (elapsed_us, inline), plus a margin for its request's delay (so that
        # a store is rarely doubtful, i.e. rarely made and undone): a younger mark wins
        age = max(0, math.ceil((now - lease.since) * 1_000_000))
        self.since_us = age + (0 if start else DOUBT_MARGIN_US)

    def doubtful(self, age: int) -> bool:
        """Whether a store made while the mark was ``age`` us old may be from a load that
        started before the invalidation (the mark is not certainly older than the load)."""
        if age < 0:
            return False
        return age < self.since_us + elapsed_us(self.measured_at)


VALUE, ACQUIRED, HELD = 1, 2, 3


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))


def _us(seconds: float) -> int:
    return int(seconds * 1_000_000)


_LIFETIME_US = _us(MARK_LIFETIME)


class RedisCoordinator:
    """The protocol above over a backend's ``scripts()`` and ``wakeups()`` capabilities."""

    def __init__(self, scripts: base.Scripts, wakeups: base.Wakeups) -> None:
        self.scripts = scripts
        self.wakeups = wakeups

    def socket_timeout(self) -> float | None:
        return self.wakeups.wait_limit()

    def begin(
        self, key: str, lock_key: str, token: bytes, ttl: float, recheck: bool
    ) -> tuple[int, bytes]:
        """``(VALUE, entry)``, ``(ACQUIRED, server time)`` or ``(HELD, holder token)``."""
        kind, payload = self.scripts.run(
            _BEGIN, [key, lock_key], [token, _ms(ttl), "1" if recheck else "0"]
        )
        return int(kind), bytes(payload)

    def finish(
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
        mark_key: str,
        check: StoreCheck | None,
    ) -> bool:
        """Store (if ``store`` and the lease holds), release our lock, and wake the waiters
        with the outcome; whether the entry was stored (and stays)."""
        stored, age = self.scripts.run(
            _FINISH,
            [key, lock_key, done_key, mark_key],
            [
                token,
                outcome,
                _ms(linger),
                entry,
                "1" if store and check is not None else "0",
                "" if ttl is None else _ms(ttl),
                0 if check is None else check.since_us,
                _us(MARK_LIFETIME),
                b"" if check is None else check.start,
            ],
        )
        if stored and check is not None and check.doubtful(int(age)):
            undo(self.scripts, key, entry)
            return False
        return bool(stored)

    def wait_done(self, done_key: str, timeout: float) -> bytes | None:
        """The holder's outcome, or None if it did not come within ``timeout``."""
        return self.wakeups.wait(done_key, timeout)


def store_args(
    key: str,
    mark_key: str,
    lock_key: str,
    entry: bytes,
    ttl: float | None,
    check: StoreCheck,
    token: bytes | None,
) -> tuple[Any, ...]:
    """``EVAL`` arguments of :data:`GUARDED_SET` (numkeys, keys, args; also sent
    inside batches)."""
    px = "" if ttl is None else _ms(ttl)
    since, start = check.since_us, check.start
    return (3, key, mark_key, lock_key, entry, px, since, _LIFETIME_US, token or b"", start)


def tag_check_args(tag_mark: str, check: StoreCheck) -> tuple[Any, ...]:
    """``EVAL`` arguments of :data:`MARK_AGE` for one tag's mark."""
    return (1, tag_mark, check.since_us, check.start, _us(MARK_LIFETIME))


def queue_mark(batch: base.CommandBatch, mark_key: str) -> None:
    """Queue the invalidation mark of one entry (or tag) on a batch (:data:`MARK`; by its
    text: a batch of marks and deletes must not be repeated, see ``Scripts.batch``)."""
    batch.eval(MARK, 1, mark_key, _ms(MARK_LIFETIME))


def guarded_set(
    scripts: base.Scripts,
    key: str,
    mark_key: str,
    lock_key: str,
    entry: bytes,
    ttl: float | None,
    lease: Lease,
) -> bool:
    """A load's store through :data:`GUARDED_SET`; whether it was stored (and stays)."""
    check = StoreCheck(lease)
    px = "" if ttl is None else _ms(ttl)
    stored, age = scripts.run(
        GUARDED_SET,
        (key, mark_key, lock_key),
        (entry, px, check.since_us, _LIFETIME_US, lease.token or b"", check.start),
    )  # the arguments of store_args, without the tuple to slice
    if stored and int(age) >= 0 and check.doubtful(int(age)):  # age -1: nothing to doubt
        undo(scripts, key, entry)
        return False
    return bool(stored)


def undo(scripts: base.Scripts, key: str, entry: bytes) -> None:
    """Delete ``key`` if it still holds ``entry`` (a store that must not stay)."""
    scripts.run(_UNDO, [key], [entry])


def revoke(scripts: base.Scripts, keys: Sequence[str], mark_keys: Sequence[str]) -> int:
    """Invalidate entries: mark each (so loads in flight do not store), then delete them,
    in one round trip; the number of entries that existed.

    Marks first: if the connection drops in between, the delete is reported as failed and
    retried, and no load has stored meanwhile.
    """

    def fill(batch: base.CommandBatch) -> None:
        for mark in mark_keys:
            queue_mark(batch, mark)
        batch.delete(*keys)

    results = scripts.batch(fill)
    return int(results[-1])


def coordinator_for(
    scripts: base.Scripts | None, wakeups: base.Wakeups | None
) -> RedisCoordinator | None:
    """A cross-process coordinator when the backend offers scripts and wake-ups (asked
    once, by the cache: cachekit.backends.base); None: the stampede stays in-process."""
    if scripts is None or wakeups is None:
        return None
    return RedisCoordinator(scripts, wakeups)
