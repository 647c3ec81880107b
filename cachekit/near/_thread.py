"""The background thread of a near-cache link: one per process, started on first use
(building a cache makes no network call) and again in a forked child (threads do not
survive ``fork``). Shared by the standalone link and the cluster's topology watcher."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable

__all__ = ["ProcessThread"]


class ProcessThread:
    def __init__(self, target: Callable[[], None], name: str) -> None:
        self._target = target
        self._name = name
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        # the process that started the thread (in a forked child: the parent, until restarted)
        self.pid = os.getpid()

    @property
    def thread(self) -> threading.Thread | None:
        return self._thread

    def running(self) -> bool:
        thread = self._thread
        return thread is not None and thread.is_alive() and self.pid == os.getpid()

    def ensure(self, closed: threading.Event) -> None:
        """Start the thread unless it runs in this process; never once ``closed`` is set."""
        if self.running():
            return
        with self._lock:
            if closed.is_set() or self.running():
                return
            self.pid = os.getpid()
            self._thread = threading.Thread(target=self._target, name=self._name, daemon=True)
            self._thread.start()

    def join(self, timeout: float) -> None:
        """Wait for the thread to end (not from the thread itself)."""
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def after_fork(self) -> None:
        """In a forked child: the parent's thread and lock are not ours."""
        self._lock = threading.Lock()
        self._thread = None
