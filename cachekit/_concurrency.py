"""What genuinely differs between threads and event loops, written once, by hand.

The generated sync code calls the names without the ``a`` prefix; the async sources call
the ``a`` names. Nothing else in cachekit knows which world it runs in.

- ``_resolve`` / ``_aresolve``: call a loader that may be sync or async.
- ``Flights`` / ``AsyncFlights``: single-flight per key (one caller computes, the others
  wait for its result, or its exception).
- ``_spawn`` / ``_aspawn``: run a refresh in the background (a daemon thread / a task).
- ``Notifier``: wake every waiter, threads and tasks alike, without polling.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import threading
import time
import weakref
from collections.abc import Callable, Coroutine
from typing import Any

from ._sentinel import MISSING

__all__ = [
    "AsyncFlight",
    "AsyncFlights",
    "Flight",
    "Flights",
    "Notifier",
    "_aresolve",
    "_asleep",
    "_aspawn",
    "_resolve",
    "_sleep",
    "_spawn",
]

logger = logging.getLogger(__name__)


def _resolve(func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    return func(*args, **kwargs)


async def _aresolve(func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call a sync or async callable from async code."""
    result = func(*args, **kwargs)
    if inspect.isawaitable(result):
        result = await result
    return result


# -- single flight --------------------------------------------------------------------
class Flight:
    """One computation in progress, for threads: ``result()`` blocks until it lands."""

    __slots__ = ("_done", "error", "value")

    def __init__(self) -> None:
        self._done = threading.Event()
        self.value: Any = MISSING
        self.error: BaseException | None = None

    def finish(self, value: Any) -> None:
        self.value = value
        self._done.set()

    def fail(self, error: BaseException) -> None:
        self.error = error
        self._done.set()

    def result(self, timeout: float | None) -> Any:
        """The value; raises the computation's exception; MISSING after ``timeout``."""
        if not self._done.wait(timeout):
            return MISSING
        if self.error is not None:
            raise self.error
        return self.value


class Flights:
    """Computations in progress by key, for threads."""

    def __init__(self) -> None:
        self._table: dict[str, Flight] = {}
        self._lock = threading.Lock()

    def join(self, key: str) -> tuple[Flight, bool]:
        """The flight for ``key`` and whether the caller leads it (must finish and leave)."""
        flight = self._table.get(key)
        if flight is not None:
            return flight, False
        with self._lock:
            flight = self._table.get(key)
            if flight is not None:
                return flight, False
            flight = self._table[key] = Flight()
            return flight, True

    def busy(self, key: str) -> bool:
        return key in self._table

    def leave(self, key: str, flight: Flight) -> None:
        with self._lock:
            if self._table.get(key) is flight:
                del self._table[key]


class AsyncFlight:
    """One computation in progress, for tasks of one event loop."""

    __slots__ = ("_done", "error", "value")

    def __init__(self) -> None:
        self._done = asyncio.get_running_loop().create_future()
        self.value: Any = MISSING
        self.error: BaseException | None = None

    def finish(self, value: Any) -> None:
        self.value = value
        if not self._done.done():
            self._done.set_result(None)

    def fail(self, error: BaseException) -> None:
        # kept as an attribute, not set_exception: a flight nobody waited on must not log
        # "exception was never retrieved"
        self.error = error
        if not self._done.done():
            self._done.set_result(None)

    async def aresult(self, timeout: float | None) -> Any:
        try:
            await asyncio.wait_for(asyncio.shield(self._done), timeout)
        except asyncio.TimeoutError:
            return MISSING
        if self.error is not None:
            raise self.error
        return self.value


class AsyncFlights:
    """Computations in progress by key, per event loop (a future belongs to one loop)."""

    def __init__(self) -> None:
        self._tables: weakref.WeakKeyDictionary[Any, dict[str, AsyncFlight]] = (
            weakref.WeakKeyDictionary()
        )

    def _table(self) -> dict[str, AsyncFlight]:
        loop = asyncio.get_running_loop()
        table = self._tables.get(loop)
        if table is None:
            table = self._tables[loop] = {}
        return table

    def join(self, key: str) -> tuple[AsyncFlight, bool]:
        table = self._table()  # no await between lookup and insert: atomic in one loop
        flight = table.get(key)
        if flight is not None:
            return flight, False
        flight = table[key] = AsyncFlight()
        return flight, True

    def busy(self, key: str) -> bool:
        return key in self._table()

    def leave(self, key: str, flight: AsyncFlight) -> None:
        table = self._table()
        if table.get(key) is flight:
            del table[key]


# -- background work ------------------------------------------------------------------
def _spawn(func: Callable[..., Any], *args: Any) -> None:
    """Run ``func(*args)`` in a daemon thread (a background refresh); errors are logged."""

    def run() -> None:
        try:
            func(*args)
        except Exception:  # pragma: no cover - the refresh logs its own failures
            logger.exception("background refresh failed")

    threading.Thread(target=run, name="cachekit-refresh", daemon=True).start()


_background: set[asyncio.Task[Any]] = set()  # strong refs: the loop keeps only weak ones


def _aspawn(func: Callable[..., Coroutine[Any, Any, Any]], *args: Any) -> None:
    """Run ``await func(*args)`` as a task of the running loop."""
    task = asyncio.get_running_loop().create_task(func(*args))
    _background.add(task)
    task.add_done_callback(_background.discard)


# -- waking waiters -------------------------------------------------------------------
class Notifier:
    """Wakes every current waiter on ``notify_all()``; threads and tasks of any loop.

    A waiter registers *before* it re-checks its condition, so a notification between the
    check and the wait is never lost.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiters: set[Callable[[], None]] = set()

    def notify_all(self) -> None:
        with self._lock:
            waiters, self._waiters = self._waiters, set()
        for wake in waiters:
            wake()

    def wait(self, timeout: float | None, blocked: Callable[[], bool]) -> None:
        """Block while ``blocked()`` until notified or ``timeout`` seconds pass."""
        event = threading.Event()
        with self._lock:
            self._waiters.add(event.set)
        try:
            if blocked():
                event.wait(timeout)
        finally:
            with self._lock:
                self._waiters.discard(event.set)

    async def await_(self, timeout: float | None, blocked: Callable[[], bool]) -> None:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()

        def wake() -> None:
            try:
                loop.call_soon_threadsafe(_settle, future)
            except RuntimeError:  # the loop is closed: nobody is waiting any more
                pass

        with self._lock:
            self._waiters.add(wake)
        try:
            if blocked():
                try:
                    await asyncio.wait_for(future, timeout)
                except asyncio.TimeoutError:
                    pass
        finally:
            with self._lock:
                self._waiters.discard(wake)


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _sleep(seconds: float) -> None:
    time.sleep(seconds)


async def _asleep(seconds: float) -> None:
    await asyncio.sleep(seconds)
