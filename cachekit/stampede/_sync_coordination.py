"""Stampede coordination across processes on Redis: a lock per entry and a wake-up list.

GENERATED from ``cachekit/stampede/_async_coordination.py`` by
``scripts/unasync.py`` -- do not edit; edit the async source and run the script.

Protocol (keys from :func:`cachekit.stampede.rules.companion_key`, all in the entry's slot):

1. ``BEGIN`` (one script): the entry if it landed meanwhile (a tombstone is none); else
   the current holder's token; else take the lock (``SET lock token PX ttl``) and lead,
   with what the key holds (its lease: see :mod:`cachekit.leases.rules`).
2. The leader computes, then ``FINISH`` (one script): store the entry only while its lease
   holds (the lock still holds our token: a holder slower than its ``lock_ttl`` never
   overwrites the next holder's value; and the key holds what it held at ``BEGIN``, or
   nothing: an invalidation since left a new tombstone), delete the lock if it still
   holds our token (compare-and-delete), ``RPUSH`` the outcome (``v`` + entry bytes, or
   ``e``: the computation failed, ``x``: not encodable or not stored) onto the holder's
   done list, with a short expiry.
3. Waiters block on ``BLMOVE done done LEFT LEFT``: the element is popped and pushed
   back in one step, so the single element wakes every blocked waiter in turn, and each
   gets the value itself (no extra ``GET``). A wait is sliced below the client's socket
   timeout; after a slice the waiter asks ``BEGIN`` again, which is how a crashed
   holder's expired lock is noticed and taken over.

Loads without the lock store through the backend's ``tombstones()`` (``SET NX``, or a
compare-and-set over the tombstone they read). Tags keep invalidation *marks* (the
server's time, on the tag): :data:`MARK_AGE` reads one next to a tagged store.
"""

from __future__ import annotations

import math
import time
from typing import Any

from ..backends import base
from ..leases.rules import LUA_IS_TOMBSTONE, MARK_LIFETIME, Lease, elapsed_us

__all__ = [
    "MARK",
    "MARK_AGE",
    "RedisCoordinator",
    "StoreCheck",
    "undo",
    "coordinator_for",
    "queue_mark",
    "tag_check_args",
]

# A tombstone is no entry; on acquiring, the lock holder gets what the key holds ('+' and
# a tombstone or a stale entry, '-' if nothing): its lease (see _FINISH).
_BEGIN = (
    LUA_IS_TOMBSTONE
    + """
if ARGV[3] == '1' then
  local entry = redis.call('GET', KEYS[1])
  if entry and not is_tombstone(entry) then return {1, entry} end
end
local holder = redis.call('GET', KEYS[2])
if holder then return {3, holder} end
redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
local held = redis.call('GET', KEYS[1])
if held then return {2, '+' .. held} end
return {2, '-'}
"""
)

# Whether a tagged load may still store, as far as one tag's invalidation mark says. A
# mark holds the server's TIME when it was made ("seconds microseconds"). A load only
# knows how long ago it began (``since_us``, the client's monotonic clock): it compares
# that with the mark's age, and returns the age so that the client can tell whether its
# own request's delay makes the answer doubtful (-1: nothing to doubt).
_LEASE = """
local function micros(text)
  local s, us = string.match(text, '^(%d+) (%d+)$')
  if not s then return nil end
  return tonumber(s) * 1000000 + tonumber(us)
end
local function lease_ok(mark_key, since_us, lifetime_us)
  if since_us >= lifetime_us then return false, -1 end
  local mark = redis.call('GET', mark_key)
  if not mark then return true, -1 end
  local clock = redis.call('TIME')
  local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
  local age = now - (micros(mark) or now)
  return age >= since_us, age
end
"""

# KEYS[1] entry, KEYS[2] lock, KEYS[3] done list
# ARGV[1] token, ARGV[2] outcome, ARGV[3] linger ms, ARGV[4] entry, ARGV[5] store?,
# ARGV[6] PX ms or '', ARGV[7] what BEGIN returned the key held ('-': nothing).
# Returns 1 if stored.
_FINISH = """
local mine = redis.call('GET', KEYS[2]) == ARGV[1]
local stored = 0
if ARGV[5] == '1' and mine then
  local held = redis.call('GET', KEYS[1])
  if (not held) or ARGV[7] == '+' .. held then
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
return stored
"""

# An invalidation mark: KEYS[1] gets the server's TIME ("seconds microseconds"), PX ARGV[1]
MARK = """
local now = redis.call('TIME')
redis.call('SET', KEYS[1], now[1] .. ' ' .. now[2], 'PX', ARGV[1])
return 1
"""

# Whether a tag's mark allows a tagged load's store (checked next to the store): KEYS[1]
# the tag's mark, ARGV[1] us since the load started, ARGV[2] mark lifetime us.
# Returns {ok, mark age}.
MARK_AGE = (
    _LEASE
    + """
local ok, age = lease_ok(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]))
return {ok and 1 or 0, age}
"""
)

# Undo a store that turned out doubtful: delete the entry if it is still ours
_UNDO = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


DOUBT_MARGIN_US = 5_000
"""A tagged load's store is undone if a tag's invalidation mark is less than the load's
age plus this (5 ms) old: the load may have begun before the invalidation, its age being
measured on this side before the request travels (see :class:`StoreCheck`)."""


class StoreCheck:
    """One tagged store in flight, against its tags' marks: the load's age is measured
    here, just before the request is sent, but the script runs a little later (the
    request in transit, or this thread descheduled). A mark whose age falls within that
    delay of the load's age may be from just after the load started: the store is then
    undone (:func:`undo`).
    """

    __slots__ = ("measured_at", "since_us")

    def __init__(self, lease: Lease) -> None:
        self.measured_at = now = time.monotonic()
        # a load's age (elapsed_us, inline), plus a margin for its request's delay (so that
        # a store is rarely doubtful, i.e. rarely made and undone): a younger mark wins
        self.since_us = max(0, math.ceil((now - lease.since) * 1_000_000)) + DOUBT_MARGIN_US

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
        """``(VALUE, entry)``, ``(ACQUIRED, what the key holds: b"+" and it, or b"-")``
        or ``(HELD, holder token)``."""
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
        held: bytes,
    ) -> bool:
        """Store (if ``store`` and the key still holds ``held``, or nothing),
        release our lock, and wake the waiters with the outcome; whether it was stored."""
        stored = self.scripts.run(
            _FINISH,
            [key, lock_key, done_key],
            [
                token,
                outcome,
                _ms(linger),
                entry,
                "1" if store else "0",
                "" if ttl is None else _ms(ttl),
                held,
            ],
        )
        return bool(stored)

    def wait_done(self, done_key: str, timeout: float) -> bytes | None:
        """The holder's outcome, or None if it did not come within ``timeout``."""
        return self.wakeups.wait(done_key, timeout)


def tag_check_args(tag_mark: str, check: StoreCheck) -> tuple[Any, ...]:
    """``EVAL`` arguments of :data:`MARK_AGE` for one tag's mark."""
    return (1, tag_mark, check.since_us, _LIFETIME_US)


def queue_mark(batch: base.CommandBatch, mark_key: str) -> None:
    """Queue the invalidation mark of a tag on a batch (:data:`MARK`; by its text: a
    batch of marks and deletes must not be repeated, see ``Scripts.batch``)."""
    batch.eval(MARK, 1, mark_key, _ms(MARK_LIFETIME))


def undo(scripts: base.Scripts, key: str, entry: bytes) -> None:
    """Delete ``key`` if it still holds ``entry`` (a store that must not stay)."""
    scripts.run(_UNDO, [key], [entry])


def coordinator_for(
    scripts: base.Scripts | None, wakeups: base.Wakeups | None
) -> RedisCoordinator | None:
    """A cross-process coordinator when the backend offers scripts and wake-ups (asked
    once, by the cache: cachekit.backends.base); None: the stampede stays in-process."""
    if scripts is None or wakeups is None:
        return None
    return RedisCoordinator(scripts, wakeups)
