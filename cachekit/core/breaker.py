"""Fail fast, then fail open: a circuit breaker in front of a remote backend.

The first connection error or timeout opens the circuit: from then on every cache call
skips the backend at once (a read is a miss, a write is dropped) and the application runs
on its real functions with nothing added. While open, a background thread probes the
backend every ``retry_interval`` seconds; the first probe that answers closes the circuit.
Callers never wait on a probe, so a frozen Redis costs one timeout per outage, not one per
call, and one log line when the outage starts and one when it ends.

Invalidations are never dropped with the writes. A ``delete`` (``invalidate``,
``@cache.invalidates``, ``invalidate_tags``, a ``set`` that could not be stored) made while
the circuit is open, or that failed because of the outage, is kept as *pending*; when a
probe answers, the pending invalidations are replayed first and the circuit closes only
after they were delivered. Until then every read is a miss, so no entry an invalidation
was meant to remove is ever served. At most :data:`MAX_PENDING_KEYS` keys and
:data:`MAX_PENDING_TAGS` tags are remembered; beyond that the replay clears the cache's
whole namespace instead (the safe fallback: misses, never stale values).
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from typing import Any

__all__ = ["MAX_PENDING_KEYS", "MAX_PENDING_TAGS", "CircuitBreaker", "Pending"]

MAX_PENDING_KEYS = 10_000
"""Invalidated keys remembered during an outage; more and the namespace is cleared."""
MAX_PENDING_TAGS = 1_000
"""Invalidated tags remembered during an outage; more and the namespace is cleared."""


class Pending:
    """Invalidations that could not reach the backend yet."""

    __slots__ = ("bump", "keys", "overflow", "tags")

    def __init__(self) -> None:
        self.keys: set[str] = set()
        self.tags: set[str] = set()
        self.overflow = False  # too many to remember: clear the namespace instead
        self.bump = False  # an invalidate_all() (a generation bump) to make

    def __bool__(self) -> bool:
        return bool(self.keys or self.tags or self.overflow or self.bump)

    def add(self, keys: Iterable[str], tags: Iterable[str]) -> None:
        if self.overflow:
            return
        self.keys.update(keys)
        self.tags.update(tags)
        if len(self.keys) > MAX_PENDING_KEYS or len(self.tags) > MAX_PENDING_TAGS:
            self.overflow = True
            self.keys.clear()
            self.tags.clear()

    def merge(self, other: Pending) -> None:
        self.bump = self.bump or other.bump
        if other.overflow:
            self.overflow = True
            self.keys.clear()
            self.tags.clear()
        else:
            self.add(other.keys, other.tags)


logger = logging.getLogger(__name__)


class CircuitBreaker:
    def __init__(
        self,
        probe: Callable[[], object],
        *,
        retry_interval: float = 0.2,
        name: str = "backend",
    ) -> None:
        self.open = False  # read on every call, without a lock
        self.opened_at: float | None = None
        self.trips = 0
        self._probe = probe
        self._retry_interval = retry_interval
        self._name = name
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pending = Pending()
        self._reconciler: Any = None  # has ``_replay_pending(pending)`` (the cache)
        # loads (see cachekit.leases.rules) that started before this monotonic time do not
        # store: set when an overflowing outage was reconciled by clearing the namespace
        self.lease_floor = float("-inf")
        self._exit_hook = False  # an atexit warning about undelivered invalidations
        self._reported: Pending | None = None  # the undelivered ones close() warned about

    @property
    def state(self) -> str:
        return "open" if self.open else "closed"

    def trip(self, error: BaseException) -> None:
        with self._lock:
            if self.open:
                return
            self.open = True
            self.opened_at = time.monotonic()
            self.trips += 1
            logger.warning(
                "%s unavailable (%s); serving without the cache until it answers",
                self._name,
                error,
            )
            self._start_probe()

    def _start_probe(self) -> None:  # under self._lock
        self._thread = threading.Thread(
            target=self._run,
            args=(self._stop,),
            name=f"cachekit-breaker-{self._name}",
            daemon=True,
        )
        self._thread.start()

    def resume(self) -> None:
        """Probe again if close() kept invalidations it could not deliver and the cache is
        used again (called on the open-circuit path, so the reused cache heals)."""
        if self._thread is None and self.open:
            with self._lock:
                if self._thread is None and self.open:
                    self._start_probe()

    @property
    def pending(self) -> int:
        """Invalidations (keys and tags) waiting for the backend to answer again."""
        return len(self._pending.keys) + len(self._pending.tags)

    def defer(self, keys: Iterable[str], tags: Iterable[str], reconciler: Any) -> bool:
        """Keep invalidations to replay (through ``reconciler._replay_pending``) before the
        circuit closes; False if it is closed already (deliver them now instead)."""
        with self._lock:
            if not self.open:
                return False
            self._reconciler = reconciler
            self._pending.add(keys, tags)
            if not self._exit_hook:  # exiting mid-outage loses them: say so then
                self._exit_hook = True
                atexit.register(_report_at_exit, weakref.ref(self))
            return True

    def defer_bump(self, reconciler: Any) -> bool:
        """Keep an ``invalidate_all()`` to make before the circuit closes (as :meth:`defer`)."""
        with self._lock:
            if not self.open:
                return False
            self._reconciler = reconciler
            self._pending.bump = True
            return True

    def _reconcile(self, stop: threading.Event) -> bool:
        """Replay the pending invalidations; True once none is left (the caller closes),
        False if the backend failed again (keep probing)."""
        while True:
            with self._lock:
                if stop.is_set() or not self._pending:
                    return True
                pending, self._pending = self._pending, Pending()
                reconciler = self._reconciler
            try:
                reconciler._replay_pending(pending)
            except Exception as exc:
                with self._lock:
                    self._pending.merge(pending)  # keep them for the next probe
                logger.warning("%s: replaying invalidations failed: %s", self._name, exc)
                return False
            logger.info(
                "%s: delivered %d invalidations made during the outage",
                self._name,
                len(pending.keys) + len(pending.tags),
            )

    def _run(self, stop: threading.Event) -> None:
        while not stop.wait(self._retry_interval):
            try:
                self._probe()
            except Exception:  # still down: keep probing quietly
                continue
            if not self._reconcile(stop):
                continue
            with self._lock:
                if stop.is_set():
                    return
                if self._pending:  # deferred while we replayed: once more
                    continue
                self.open = False
                down = time.monotonic() - (self.opened_at or 0.0)
                self.opened_at = None
            logger.info("%s is back after %.1f s", self._name, down)
            return

    def close(self) -> None:
        """Stop probing (the cache is closing). A cache used again after close() gets a
        working breaker: the next outage starts a new probe. Invalidations not delivered
        yet are kept, with the circuit open: a cache used again after close() (and
        resume()) replays them before it reads, instead of serving what they deleted."""
        with self._lock:
            stop, thread = self._stop, self._thread
            stop.set()
            self._stop = threading.Event()
            self._thread = None
            lost = self._pending
            if not lost:
                self.open = False
                self.opened_at = None
            else:
                self._reported = lost
        if lost:
            self._report(lost, "closed")
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=1.0)

    def _report(self, lost: Pending, when: str) -> None:
        logger.warning(
            "%s: %s with invalidations never delivered (%d keys, %d tags%s)",
            self._name,
            when,
            len(lost.keys),
            len(lost.tags),
            ", more than could be remembered" if lost.overflow else "",
        )


def _report_at_exit(ref: weakref.ref[CircuitBreaker]) -> None:
    """At interpreter exit: the invalidations an outage left undelivered are lost."""
    breaker = ref()
    if breaker is not None:
        lost = breaker._pending
        if lost and lost is not breaker._reported:  # close() said so already
            breaker._report(lost, "exiting")
