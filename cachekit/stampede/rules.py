"""Stampede protection: the pure decisions (no backend, no event loop, no clock of its own).

Everything here takes values and a clock reading and returns a decision, so it is tested
without Redis and without a loop. The I/O that acts on these decisions is in
:mod:`cachekit.stampede._async_stampede` (sync twin generated) and
:mod:`cachekit.stampede._async_coordination`.

Entry metadata (only for functions using ``early_refresh``, ``stale_ttl`` or
``stale_if_error``; plain ``@cached`` entries carry none)::

    {"x": logical expiry, Unix seconds (absent: no expiry),
     "d": seconds the computation took (XFetch's delta)}

The physical TTL given to the backend is the logical TTL plus the longest stale window,
so a logically expired entry is still there to be served stale or on error.

Key layout (cluster-ready): every key that coordinates one entry is a *companion* of the
entry key ``{prefix}:{version}:{key}`` and hashes to the same Redis Cluster slot, so one
Lua script may touch the entry, its lock and its wake-up list::

    #{prefix}:{version}:lock:{<entry key>}             the lock (token, PX ttl)
    #{prefix}:{version}:done:<token>:{<entry key>}     wake-up list of that lock holder

(the ``#`` head is :func:`cachekit.core.keys.internal_head`: ``clear()`` never deletes a held
lock). When the entry key has a hash tag of its own (``user:{42}``), that tag is reused
(``...:lock:{42}:user:{42}``). ``cache.lock(name)`` uses the lock key of the entry
``name`` at generation 0: a named lock and the stampede lock of the same key are one and
the same lock until ``invalidate_all()`` moves the entries (and their stampede locks) to a
new generation, while named locks stay where they are (:mod:`cachekit.core.generation`).
"""

from __future__ import annotations

import binascii
import enum
import functools
import math
from dataclasses import dataclass
from typing import Any

from ..core.keys import internal_head
from ..exceptions import ConfigurationError


def valid_lock_ttl(ttl: Any) -> bool:
    """A lock always expires, in whole milliseconds on Redis (``PX``): a number (not a
    bool) of at least 1 ms, finite (NaN, inf and 1e-9 used to fail on Redis as backend
    errors, and to take a lock that never or at once expired in memory)."""
    return isinstance(ttl, (int, float)) and not isinstance(ttl, bool) and 0.001 <= ttl < math.inf

__all__ = [
    "Freshness",
    "StampedeOptions",
    "classify",
    "companion_key",
    "entry_meta",
    "hash_tag",
    "physical_ttl",
    "wait_slice",
    "xfetch_refresh",
]


class Freshness(enum.Enum):
    FRESH = "fresh"  # serve it
    EARLY = "early"  # serve it, and refresh in the background (XFetch drew "now")
    STALE = "stale"  # past logical expiry, inside stale_ttl: serve it, refresh in background
    EXPIRED = "expired"  # past every serving window: recompute (kept only for stale_if_error)


@dataclass(frozen=True)
class StampedeOptions:
    """The stampede options of one decorated function or ``get_or_set`` call, validated."""

    lock: bool = False
    lock_ttl: float = 10.0
    lock_timeout: float | None = None  # None: as long as lock_ttl
    early_refresh: float = 0.0  # XFetch beta; 0 disables
    stale_ttl: float = 0.0
    stale_if_error: float = 0.0  # seconds after logical expiry a value may serve on error

    @classmethod
    def build(
        cls,
        *,
        lock: bool = False,
        lock_ttl: float = 10.0,
        lock_timeout: float | None = None,
        early_refresh: bool | float = False,
        stale_ttl: float | None = None,
        stale_if_error: bool | float = False,
        ttl: float | None = None,
    ) -> StampedeOptions:
        """Validate user options; ``ttl`` (seconds or None) sizes ``stale_if_error=True``."""
        beta = (1.0 if early_refresh else 0.0) if isinstance(early_refresh, bool) else early_refresh
        if not isinstance(beta, (int, float)) or beta < 0:
            raise ConfigurationError(f"early_refresh must be a bool or a beta >= 0, not {beta!r}")
        stale = float(stale_ttl or 0)
        if stale < 0:
            raise ConfigurationError(f"stale_ttl must be >= 0 seconds, not {stale_ttl!r}")
        if isinstance(stale_if_error, bool):
            # True: serve on error for as long as anything is kept (stale_ttl, else one ttl)
            on_error = (stale or (ttl or 0.0)) if stale_if_error else 0.0
        else:
            on_error = float(stale_if_error)
        if on_error < 0:
            raise ConfigurationError(
                f"stale_if_error must be a bool or seconds >= 0, not {stale_if_error!r}"
            )
        if not valid_lock_ttl(lock_ttl):
            raise ConfigurationError(
                f"lock_ttl must be seconds from 0.001 up, finite, not {lock_ttl!r}"
            )
        if lock_timeout is not None and lock_timeout < 0:
            raise ConfigurationError(f"lock_timeout must be >= 0 seconds, not {lock_timeout!r}")
        return cls(bool(lock), float(lock_ttl), lock_timeout, float(beta), stale, on_error)

    @property
    def uses_meta(self) -> bool:
        """Entries need logical expiry and delta in their metadata."""
        return bool(self.early_refresh or self.stale_ttl or self.stale_if_error)

    @property
    def active(self) -> bool:
        return self.lock or self.uses_meta

    @property
    def wait_timeout(self) -> float:
        """How long a waiter waits for another caller's computation before doing it itself."""
        return self.lock_ttl if self.lock_timeout is None else self.lock_timeout


def physical_ttl(ttl: float | None, options: StampedeOptions) -> float | None:
    """How long the backend keeps an entry: the logical TTL plus the longest stale window."""
    if ttl is None:
        return None
    return ttl + max(options.stale_ttl, options.stale_if_error)


def entry_meta(now: float, ttl: float | None, delta: float) -> dict[str, Any]:
    """Metadata stored with an entry computed at ``now`` (wall clock) in ``delta`` seconds."""
    meta: dict[str, Any] = {"d": round(delta, 6)}
    if ttl is not None:
        meta["x"] = now + ttl
    return meta


def xfetch_refresh(now: float, expiry: float, delta: float, beta: float, rand: float) -> bool:
    """XFetch (Vattani, Chierichetti, Lowenstein, VLDB 2015): recompute early when
    ``now - delta * beta * ln(rand) >= expiry``; ``rand`` uniform in (0, 1].

    The expected head start is ``delta * beta``: the longer the computation, the earlier
    someone starts it, and the probability rises to 1 as expiry nears.
    """
    if rand <= 0.0:
        rand = 5e-324  # ln(0) is -inf: "refresh now", which is the limit anyway
    return now - delta * beta * math.log(rand) >= expiry


def classify(
    meta: dict[str, Any] | None, now: float, options: StampedeOptions, rand: float
) -> Freshness:
    """What a found entry is worth at wall-clock ``now``."""
    expiry = meta.get("x") if meta else None
    if expiry is None:  # no logical expiry (plain entry, or ttl=None)
        return Freshness.FRESH
    if now < expiry:
        if options.early_refresh and xfetch_refresh(
            now, expiry, float(meta.get("d", 0.0)) if meta else 0.0, options.early_refresh, rand
        ):
            return Freshness.EARLY
        return Freshness.FRESH
    if now < expiry + options.stale_ttl:
        return Freshness.STALE
    return Freshness.EXPIRED


def may_serve_on_error(meta: dict[str, Any] | None, now: float, options: StampedeOptions) -> bool:
    """Whether a value found with ``meta`` may stand in for a failed computation."""
    if not options.stale_if_error:
        return False
    expiry = meta.get("x") if meta else None
    return expiry is None or now < expiry + options.stale_if_error


def wait_slice(remaining: float, socket_timeout: float | None) -> float:
    """How long one blocking Redis wait may block: less than the client's socket timeout
    (or the read would time out and trip the circuit breaker), at most 1 s (between slices
    a waiter notices a crashed holder's expired lock), at least 10 ms."""
    limit = 1.0 if socket_timeout is None else min(1.0, socket_timeout * 0.6)
    return max(0.01, min(remaining, limit))


def hash_tag(key: str) -> str | None:
    """The hash tag Redis Cluster would use for ``key``, or None (the whole key is hashed)."""
    start = key.find("{")
    if start != -1:
        end = key.find("}", start + 1)
        if end > start + 1:
            return key[start + 1 : end]
    return None


def companion_key(ns_text: str, kind: str, full_key: str) -> str:
    """A coordination key (``kind``: ``lock``, ``done:<token>``) for the entry ``full_key``,
    in the cache's namespace, hashing to the entry's cluster slot whenever the key allows."""
    tag = hash_tag(full_key)
    head = internal_head(ns_text, kind)  # outside the namespace: clear() leaves locks alone
    if tag is not None:
        return f"{head}{{{tag}}}:{full_key[len(ns_text):]}"
    if "{" not in ns_text:
        if "}" not in full_key:
            return f"{head}{{{full_key}}}"
        # a '}' but no valid tag ("a}b", an empty dict argument's "{}"): Redis hashes the
        # whole key; a short tag of the same slot puts the companion next to it
        return f"{head}{{{slot_tag(_slot(full_key))}}}:{full_key[len(ns_text):]}"
    # A brace in the namespace but no valid tag: no way to name the same slot; only
    # matters on a cluster.
    return head + full_key[len(ns_text) :]


def _slot(key: str) -> int:
    """The Redis Cluster slot of ``key`` as a whole (CRC16/XMODEM mod 16384)."""
    return binascii.crc_hqx(key.encode("utf-8", "surrogatepass"), 0) % 16384


@functools.lru_cache(maxsize=16384)  # one per slot at most
def slot_tag(slot: int) -> str:
    """A short hash tag whose keys land in ``slot`` (found by trying numbers in order:
    about 10 ms the first time a slot is asked for, then cached)."""
    number = 0
    while _slot(f"s{number}") != slot:
        number += 1
    return f"s{number}"
