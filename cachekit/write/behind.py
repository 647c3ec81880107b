"""What the write strategies do differently in threads and in event loops, by hand, once.

The worker logic itself is written once, in :mod:`cachekit.write._async_write` (the sync twin
is generated). What cannot be generated lives here: the signals a worker sleeps on, how
user callables are called (a sync ``store_many`` runs in a worker thread when the worker
is an asyncio task, an async one gets an event loop when the worker is a thread), and
the in-process queue that both kinds of worker drain.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable, Coroutine, Iterable, Sequence
from typing import Any, TypeVar

from ..core.sentinel import MISSING
from .rules import DeadLetter, QueuedWrite, encode_id

_T = TypeVar("_T")

__all__ = [
    "MemoryWriteQueue",
    "TaskSignal",
    "ThreadSignal",
    "WriteBehindQueues",
    "acall_store",
    "acall_user",
    "call_store",
    "call_user",
]


# -- signals: a generation counter, so a notify between "check" and "wait" is not lost --
class ThreadSignal:
    def __init__(self) -> None:
        self.generation = 0
        self._cond = threading.Condition()

    def notify(self) -> None:
        with self._cond:
            self.generation += 1
            self._cond.notify_all()

    def wait(self, seen: int, timeout: float | None) -> None:
        """Return when ``generation`` moved past ``seen``, or after ``timeout`` seconds."""
        with self._cond:
            self._cond.wait_for(lambda: self.generation != seen, timeout)


class TaskSignal:
    """The same for tasks of one event loop (``notify`` may come from any thread)."""

    def __init__(self) -> None:
        self.generation = 0
        self._event: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def notify(self) -> None:
        self.generation += 1
        event, loop = self._event, self._loop
        if event is None or loop is None:
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            event.set()
        elif not loop.is_closed():
            loop.call_soon_threadsafe(event.set)

    async def wait(self, seen: int, timeout: float | None) -> None:
        if self.generation != seen:
            return
        self._loop = asyncio.get_running_loop()
        event = self._event = asyncio.Event()
        if self.generation != seen:  # notified while the event was being made
            return
        try:
            await asyncio.wait_for(event.wait(), timeout)
        except TimeoutError:
            pass


# -- calling the user's functions ---------------------------------------------------------
def call_user(func: Callable[..., Any], *args: Any) -> Any:
    """A loader/store called from sync code: it must be a plain function."""
    result = func(*args)
    if inspect.isawaitable(result):
        close = getattr(result, "close", None)
        if close is not None:
            close()
        raise TypeError(
            f"{getattr(func, '__qualname__', func)!r} is async: use the a-prefixed "
            "methods (aget/aset/adelete) from async code"
        )
    return result


async def acall_user(func: Callable[..., Any], *args: Any) -> Any:
    """A loader/store called from async code: sync or async."""
    result = func(*args)
    if inspect.isawaitable(result):
        result = await result
    return result


async def _await(awaitable: Any) -> Any:
    return await awaitable


def call_store(func: Callable[..., Any], items: dict[Any, Any]) -> Any:
    """``store_many`` from the worker thread; an async one runs in a short-lived loop."""
    result = func(items)
    if inspect.isawaitable(result):
        return asyncio.run(_await(result))
    return result


async def acall_store(func: Callable[..., Any], items: dict[Any, Any]) -> Any:
    """``store_many`` from the worker task; a sync one runs in a thread, so a slow
    database call does not stall the event loop."""
    if inspect.iscoroutinefunction(func):
        return await func(items)
    result = await asyncio.to_thread(func, items)
    if inspect.isawaitable(result):
        result = await result
    return result


# -- the in-process queue -----------------------------------------------------------------
def _immediate(method: Callable[..., _T]) -> Callable[..., Coroutine[Any, Any, _T]]:
    """The async twin of a method that never waits: it returns ``method``'s result (one
    definition, so the two cannot drift)."""

    async def immediate(self: Any, *args: Any, **kwargs: Any) -> _T:
        return method(self, *args, **kwargs)

    immediate.__name__ = "a" + method.__name__
    immediate.__qualname__ = method.__qualname__.rpartition(".")[0] + ".a" + method.__name__
    immediate.__doc__ = method.__doc__
    return immediate


class MemoryWriteQueue:
    """Pending writes coalesced by id (a newer ``set`` replaces a pending one), plus the
    newest entry of every id not yet stored. Thread-safe; nothing here awaits, the
    ``a``-methods exist so that the generated and the async worker read the same.
    """

    shared = False

    def __init__(self, batch_size: int, identity: str = "") -> None:
        self._batch_size = batch_size
        self.identity = identity  # which queue this is, for its journal files
        self._pending: OrderedDict[Any, QueuedWrite] = OrderedDict()
        self._latest: dict[Any, tuple[Any, Any]] = {}  # item id -> (entry, value)
        self._dead: list[DeadLetter] = []
        self._seq = 0
        self._lock = threading.Lock()
        self.epoch = 0
        self.looks = 0

    def push(self, item_id: Any, value: Any) -> bool:
        """Queue a write; True when a full batch is waiting (wake the worker)."""
        encode_id(item_id)  # the ids a Redis queue can carry faithfully, and no others
        with self._lock:
            self._seq += 1
            self._pending.pop(item_id, None)
            self._pending[item_id] = QueuedWrite(self._seq, item_id, value)
            self._latest[item_id] = (self._seq, value)
            return len(self._pending) >= self._batch_size

    def pull(self, count: int, holding: Iterable[Any] = ()) -> list[QueuedWrite]:
        with self._lock:
            taken: list[QueuedWrite] = []
            while self._pending and len(taken) < count:
                taken.append(self._pending.popitem(last=False)[1])
            return taken

    def redecode(self, writes: Sequence[QueuedWrite]) -> list[QueuedWrite]:
        return list(writes)  # nothing here is ever encoded

    def latest(self, writes: Sequence[QueuedWrite]) -> dict[Any, Any]:
        with self._lock:
            return {
                w.item_id: self._latest[w.item_id][0] for w in writes if w.item_id in self._latest
            }

    def ack(self, writes: Iterable[QueuedWrite]) -> None:
        with self._lock:
            for write in writes:
                newest = self._latest.get(write.item_id)
                if newest is not None and newest[0] == write.entry:
                    del self._latest[write.item_id]

    def dead(
        self,
        current: Sequence[QueuedWrite],
        superseded: Sequence[QueuedWrite],
        error: str,
        attempts: int,
    ) -> None:
        letter = DeadLetter({w.item_id: w.value for w in current}, error, attempts)
        with self._lock:
            self._dead.append(letter)
        self.ack([*current, *superseded])

    def dead_letters(self) -> list[DeadLetter]:
        with self._lock:
            return list(self._dead)

    def take_dead(self, letters: Sequence[DeadLetter] | None) -> list[DeadLetter]:
        with self._lock:
            chosen = [d for d in self._dead if letters is None or d in letters]
            self._dead = [d for d in self._dead if d not in chosen]
            return chosen

    def unstored(self, item_id: Any) -> Any:
        """The newest queued value of ``item_id`` not yet stored, or MISSING."""
        newest = self._latest.get(item_id)
        return MISSING if newest is None else newest[1]

    def outstanding(self, shared: bool = False) -> int:
        return len(self._latest)

    # the journal on disk (cachekit.write.journal): the writes not stored, as objects
    def journal_identity(self) -> str:
        return f"memory|{self.identity}"

    def spill_records(self) -> list[tuple[Any, ...]]:
        with self._lock:
            return [(item_id, value, None, None) for item_id, (_, value) in self._latest.items()]

    def load_spilled(self, content: dict[str, Any]) -> list[Any]:
        markers: list[Any] = []
        for item_id, value, _, _ in content["records"]:
            with self._lock:
                if item_id in self._latest:  # written here since: newer
                    continue
            self.push(item_id, value)
            with self._lock:
                markers.append((item_id, self._latest[item_id][0]))
        return markers

    def spilled_safe(self, markers: Sequence[Any]) -> bool:
        with self._lock:
            return all(self._latest.get(i, (None,))[0] != seq for i, seq in markers)

    def maintain(self, now: float, draining: bool) -> None:
        self.looks += 1

    # the async worker's names for the same methods (nothing to await in memory)
    apush = _immediate(push)
    apull = _immediate(pull)
    alatest = _immediate(latest)
    aack = _immediate(ack)
    adead = _immediate(dead)
    adead_letters = _immediate(dead_letters)
    atake_dead = _immediate(take_dead)
    amaintain = _immediate(maintain)


# -- a cache closes its write-behind queues first -----------------------------------------
class WriteBehindQueues:
    """The write-behind queues of one cache (a feature object ``Cache`` holds), so that
    closing the cache flushes and stops them first. Queues are held weakly: one that its
    user dropped is closed at interpreter exit instead."""

    def __init__(self) -> None:
        self._queues: weakref.WeakSet[Any] = weakref.WeakSet()

    def add(self, queue: Any) -> None:
        self._queues.add(queue)

    def close(self) -> None:
        """Flush and stop the thread-driven queues (a task-driven one needs ``aclose``)."""
        for queue in list(self._queues):
            queue.close()

    async def aclose(self) -> None:
        """Flush and stop every queue: tasks here, threads without blocking the loop."""
        for queue in list(self._queues):
            await queue.aclose()
            if queue._thread is not None:
                await asyncio.to_thread(queue.close)
