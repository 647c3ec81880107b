"""The in-process limiter: the algorithms of :mod:`.rules` over a dict, under a lock, on the
monotonic clock. Used by caches on an in-process backend (shared by every cache over the
same backend, as Redis is shared by every process), and as ``on_error="local"``'s fallback
while Redis cannot be reached (then each process limits on its own).
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

from .rules import Decision, Rule, decide, decision

__all__ = ["LocalBuckets", "buckets_of"]


def _now_us() -> int:
    return time.monotonic_ns() // 1000


class LocalBuckets:
    """Every identity's state (until it expires), under one lock: a decision is one dict
    read and one write, so threads never over-admit."""

    def __init__(self, clock: Callable[[], int] = _now_us) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._states: dict[str, tuple[tuple[int, ...], int]] = {}  # key -> (state, expires)
        self._prune_at = 1024  # sweep expired states when the dict grows past this

    def decide(self, key: str, cost: int, record: bool, rule: Rule) -> Decision:
        with self._lock:
            now = self._clock()
            held = self._states.get(key)
            state = held[0] if held is not None and held[1] > now else None
            kept, ttl, allowed, remaining, reset, retry = decide(state, now, cost, record, rule)
            if kept is not None:
                self._states[key] = (kept, now + max(1, ttl))
                if len(self._states) > self._prune_at:
                    self._prune(now)
        return decision(rule, allowed, remaining, reset, retry)

    def reset(self, key: str) -> bool:
        with self._lock:
            return self._states.pop(key, None) is not None

    def _prune(self, now: int) -> None:  # under the lock; amortised O(1) per decision
        self._states = {k: v for k, v in self._states.items() if v[1] > now}
        self._prune_at = max(1024, 2 * len(self._states))

    def __len__(self) -> int:
        return len(self._states)


# A backend's buckets live as long as the backend: caches over one in-process backend
# (``with_options()``, two caches given the same backend) share their limits, as processes
# share Redis. The same arrangement as the leases' marks (cachekit.leases.rules.local_marks).
_by_backend: weakref.WeakKeyDictionary[Any, LocalBuckets] = weakref.WeakKeyDictionary()
_unweakable: dict[int, tuple[Any, LocalBuckets]] = {}
_lock = threading.Lock()


def buckets_of(backend: Any) -> LocalBuckets:
    """The rate-limit state of an in-process backend."""
    with _lock:
        try:
            found = _by_backend.get(backend)
            if found is None:
                found = _by_backend[backend] = LocalBuckets()
            return found
        except TypeError:  # not weakly referenceable: kept (with its backend) for good
            kept = _unweakable.get(id(backend))
            if kept is None:
                kept = _unweakable[id(backend)] = (backend, LocalBuckets())
            return kept[1]
