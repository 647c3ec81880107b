"""What genuinely differs between threads and event loops, written once, by hand.

The generated sync code calls the names without the ``a`` prefix; the async sources call
the ``a`` names. Nothing else in cachekit knows which world it runs in.

- ``_resolve`` / ``_aresolve``: call a loader that may be sync or async.
- ``Flights`` / ``AsyncFlights``: single-flight per key (one caller computes, the others
  wait for its result, or its exception). A leader that is *interrupted* (a task
  cancelled by ``wait_for`` or a client disconnect, a thread hit by KeyboardInterrupt)
  abandons its flight instead: its followers get :data:`ABANDONED` and one of them takes
  over. An exception the function raised is shared; another caller's interruption never is.
- ``RefreshPool`` / ``AsyncRefreshPool``: background refreshes (``stale_ttl``,
  ``early_refresh``) on a few daemon threads / tasks per cache, with a bounded queue.
- ``Notifier``: wake every waiter, threads and tasks alike, without polling.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Coroutine, Iterable
from typing import Any

from .sentinel import MISSING

__all__ = [
    "ABANDONED",
    "AsyncFlight",
    "AsyncFlights",
    "AsyncRefreshPool",
    "Flight",
    "FlightTables",
    "Flights",
    "Notifier",
    "RefreshPool",
    "_aresolve",
    "_asleep",
    "_resolve",
    "_sleep",
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
class _Abandoned:
    def __repr__(self) -> str:
        return "ABANDONED"


ABANDONED: Any = _Abandoned()
"""What a follower gets when its leader was interrupted: rejoin, and maybe lead."""


def _shareable(error: BaseException) -> bool:
    """Whether a leader's exception may be raised in its followers too.

    What the function raised (an ``Exception``) is its answer, and every caller of the
    same key gets it. An interruption (``CancelledError`` from ``wait_for`` or a client
    disconnect, ``KeyboardInterrupt``, ``SystemExit``) belongs to the leader's own task
    or thread: re-raising it elsewhere would cancel callers nobody cancelled.
    """
    return isinstance(error, Exception)


class Flight:
    """One computation in progress, for threads: ``result()`` blocks until it lands."""

    __slots__ = ("_done", "error", "value", "waiters")

    def __init__(self) -> None:
        self._done = threading.Event()
        self.value: Any = MISSING
        self.error: BaseException | None = None
        self.waiters = 0  # callers that joined it as followers (introspection, tests)

    def finish(self, value: Any) -> None:
        self.value = value
        self._done.set()

    def fail(self, error: BaseException) -> None:
        """The leader raised: share the function's exception, abandon on an interruption."""
        if _shareable(error):
            self.error = error
        else:
            self.value = ABANDONED
        self._done.set()

    def result(self, timeout: float | None) -> Any:
        """The value; raises the computation's exception; MISSING after ``timeout``;
        ABANDONED if the leader was interrupted."""
        if not self._done.wait(timeout):
            return MISSING
        if self.error is not None:
            raise self.error
        return self.value


class Flights:
    """Computations in progress by key, for threads.

    ``landed`` counts the flights left so far: a caller that read ``landed`` before a
    read that missed, and finds it changed when it comes to lead, knows that a flight
    finished in between (and may have stored what it missed)."""

    def __init__(self) -> None:
        self._table: dict[str, Flight] = {}
        self._lock = threading.Lock()
        self.landed = 0

    def join(self, key: str) -> tuple[Flight, bool]:
        """The flight for ``key`` and whether the caller leads it (must finish and leave)."""
        with self._lock:  # one lock round: the followers' count stays exact
            flight = self._table.get(key)
            if flight is not None:
                flight.waiters += 1
                return flight, False
            flight = self._table[key] = Flight()
            return flight, True

    def in_progress(self) -> list[Flight]:
        with self._lock:
            return list(self._table.values())

    def busy(self, key: str) -> bool:
        return key in self._table

    def forget(self, key: str) -> None:
        """Callers from now on start a new flight (the key was invalidated: the one in
        progress may have read what the invalidation replaced). Its leader still
        finishes it for the followers that joined before."""
        with self._lock:
            self._table.pop(key, None)

    def leave(self, key: str, flight: Flight) -> None:
        with self._lock:
            if self._table.get(key) is flight:
                del self._table[key]
                self.landed += 1


class AsyncFlight:
    """One computation in progress, for tasks of one event loop."""

    __slots__ = ("_done", "error", "value", "waiters")

    def __init__(self) -> None:
        self._done = asyncio.get_running_loop().create_future()
        self.value: Any = MISSING
        self.error: BaseException | None = None
        self.waiters = 0

    def finish(self, value: Any) -> None:
        self.value = value
        if not self._done.done():
            self._done.set_result(None)

    def fail(self, error: BaseException) -> None:
        # kept as an attribute, not set_exception: a flight nobody waited on must not log
        # "exception was never retrieved"
        if _shareable(error):
            self.error = error
        else:  # the leader's cancellation is its own: followers take over
            self.value = ABANDONED
        if not self._done.done():
            self._done.set_result(None)

    async def aresult(self, timeout: float | None) -> Any:
        try:
            # shield: a follower's own cancellation (or timeout) must not cancel the
            # future every other follower waits on
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
        self.landed = 0  # as Flights.landed

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
            flight.waiters += 1
            return flight, False
        flight = table[key] = AsyncFlight()
        return flight, True

    def in_progress(self) -> list[AsyncFlight]:
        """In every event loop."""
        return [flight for table in list(self._tables.values()) for flight in table.values()]

    def busy(self, key: str) -> bool:
        return key in self._table()

    def forget(self, key: str) -> None:
        """As :meth:`Flights.forget`, in every event loop (callable from any thread: one
        ``dict.pop`` is atomic)."""
        for table in list(self._tables.values()):
            table.pop(key, None)

    def leave(self, key: str, flight: AsyncFlight) -> None:
        table = self._table()
        if table.get(key) is flight:
            del table[key]
            self.landed += 1


class FlightTables:
    """A cache's computations in progress, for threads and for event loops, and its
    stampede drivers (one per set of options): made with the :class:`~cachekit.Cache`,
    shared by the functions it decorates, forgotten by its invalidations. The async
    stampede source names the ``async_`` side; its generated twin the ``sync_`` one."""

    __slots__ = (
        "async_drivers",
        "async_flights",
        "async_refreshing",
        "sync_drivers",
        "sync_flights",
        "sync_refreshing",
    )

    def __init__(self) -> None:
        self.sync_flights, self.async_flights = Flights(), AsyncFlights()
        self.sync_refreshing, self.async_refreshing = Flights(), AsyncFlights()
        self.sync_drivers: dict[Any, Any] = {}
        self.async_drivers: dict[Any, Any] = {}

    def forget(self, keys: Iterable[str]) -> None:
        """After an invalidation of ``keys``: callers from now on, sync or async, must not
        join a computation that started before it (it may return what was invalidated)."""
        for table in (self.sync_flights, self.async_flights):
            for key in keys:
                table.forget(key)


# -- background work ------------------------------------------------------------------
REFRESH_WORKERS = 4
"""Background refreshes running at once, per cache (threads; tasks per event loop)."""
REFRESH_QUEUE = 1024
"""Refreshes waiting for a worker, per cache; beyond that a refresh is skipped (the entry
is served stale or fresh a little longer, and the next hit asks again)."""


class RefreshPool:
    """A cache's background refreshes on at most ``workers`` daemon threads.

    Threads start when work arrives and exit when the queue is empty, so an idle cache
    holds none; daemon threads, so a refresh never holds up interpreter exit (losing a
    refresh loses nothing: the entry is recomputed on a later call).
    """

    def __init__(self, workers: int = REFRESH_WORKERS, limit: int = REFRESH_QUEUE) -> None:
        self.workers = workers
        self.limit = limit
        self._lock = threading.Lock()
        self._queue: deque[tuple[Callable[..., Any], tuple[Any, ...]]] = deque()
        self._running = 0  # worker threads alive (each is running a job or about to take one)

    def submit(self, func: Callable[..., Any], *args: Any) -> bool:
        """Queue ``func(*args)``; False if the queue is full (the caller skips the refresh)."""
        job = (func, args)
        with self._lock:
            if len(self._queue) >= self.limit:
                return False
            self._queue.append(job)
            start = self._running < self.workers
            if start:
                self._running += 1
        if start:
            try:
                threading.Thread(target=self._work, name="cachekit-refresh", daemon=True).start()
            except RuntimeError:  # interpreter shutting down: no new threads
                with self._lock:
                    self._running -= 1
                    if not self._running:  # nobody left to run the queue
                        self._queue.clear()
                        return False
        return True

    def _work(self) -> None:
        while True:
            with self._lock:
                if not self._queue:
                    self._running -= 1
                    return
                func, args = self._queue.popleft()
            try:
                func(*args)
            except Exception:  # pragma: no cover - the refresh logs its own failures
                logger.exception("background refresh failed")


class _LoopQueue:
    __slots__ = ("queue", "running")

    def __init__(self) -> None:
        self.queue: deque[tuple[Callable[..., Coroutine[Any, Any, Any]], tuple[Any, ...]]] = deque()
        self.running = 0


_background: set[asyncio.Task[Any]] = set()  # strong refs: the loop keeps only weak ones


class AsyncRefreshPool:
    """A cache's background refreshes as at most ``workers`` tasks per event loop."""

    def __init__(self, workers: int = REFRESH_WORKERS, limit: int = REFRESH_QUEUE) -> None:
        self.workers = workers
        self.limit = limit
        self._loops: weakref.WeakKeyDictionary[Any, _LoopQueue] = weakref.WeakKeyDictionary()

    def submit(self, func: Callable[..., Coroutine[Any, Any, Any]], *args: Any) -> bool:
        """Queue ``await func(*args)``; False if the queue is full."""
        loop = asyncio.get_running_loop()
        state = self._loops.get(loop)
        if state is None:
            state = self._loops[loop] = _LoopQueue()
        if len(state.queue) >= self.limit:
            return False
        state.queue.append((func, args))
        if state.running < self.workers:
            state.running += 1
            task = loop.create_task(self._work(state))
            _background.add(task)
            task.add_done_callback(_background.discard)
        return True

    async def _work(self, state: _LoopQueue) -> None:
        try:
            while state.queue:
                func, args = state.queue.popleft()
                try:
                    await func(*args)
                except Exception:  # pragma: no cover - the refresh logs its own failures
                    logger.exception("background refresh failed")
        finally:
            state.running -= 1


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

    def wait_for(self, timeout: float | None, blocked: Callable[[], bool]) -> None:
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

    async def await_for(self, timeout: float | None, blocked: Callable[[], bool]) -> None:
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
