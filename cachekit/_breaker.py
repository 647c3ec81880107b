"""Fail fast, then fail open: a circuit breaker in front of a remote backend.

The first connection error or timeout opens the circuit: from then on every cache call
skips the backend at once (a read is a miss, a write is dropped) and the application runs
on its real functions with nothing added. While open, a background thread probes the
backend every ``retry_interval`` seconds; the first probe that answers closes the circuit.
Callers never wait on a probe, so a frozen Redis costs one timeout per outage, not one per
call, and one log line when the outage starts and one when it ends.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

__all__ = ["CircuitBreaker"]

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
            self._thread = threading.Thread(
                target=self._run,
                args=(self._stop,),
                name=f"cachekit-breaker-{self._name}",
                daemon=True,
            )
            self._thread.start()

    def _run(self, stop: threading.Event) -> None:
        while not stop.wait(self._retry_interval):
            try:
                self._probe()
            except Exception:  # still down: keep probing quietly
                continue
            with self._lock:
                if stop.is_set():
                    return
                self.open = False
                down = time.monotonic() - (self.opened_at or 0.0)
                self.opened_at = None
            logger.info("%s is back after %.1f s", self._name, down)
            return

    def close(self) -> None:
        """Stop probing (the cache is closing). A cache used again after close() gets a
        working breaker: the next outage starts a new probe."""
        with self._lock:
            stop, thread = self._stop, self._thread
            stop.set()
            self._stop = threading.Event()
            self._thread = None
            self.open = False
            self.opened_at = None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=1.0)
