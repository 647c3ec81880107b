"""The in-process limiter: the algorithms of :mod:`.rules` over a dict, under a lock, on the
monotonic clock. Used by caches on an in-process backend (one per store, kept in its
``local_state()``: shared by every cache over the store, as Redis is by every process),
and as ``on_error="local"``'s fallback while Redis cannot be reached (then each process
limits on its own).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from .rules import Decision, Rule, decide, decision

__all__ = ["LocalBuckets"]


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
