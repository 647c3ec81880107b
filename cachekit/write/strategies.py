"""Write strategies on a :class:`~cachekit.Cache`: ``updates``, ``invalidates``,
``write_through`` and ``write_behind`` (the feature object :class:`WriteStrategies`, which
``Cache`` holds and forwards its methods of those names to).

- ``@cache.updates(key=...)`` runs the function and stores what it returns (CachePut);
  ``@cache.invalidates(key=..., tags=...)`` runs it, then deletes (CacheEvict). Only
  after the function returned: if it raises, the cache is left alone.
- ``cache.write_through(key="user:{}", load=, store=)``: ``get`` is cache-aside through
  ``load``; ``set`` writes the source first, then the cache (a failing ``store`` raises
  and leaves nothing cached); ``delete`` drops the entry (and calls ``delete=`` if given).
  Two concurrent ``set`` of one id may leave the cache with the older value until its
  TTL, as with any cache written after its source.
- ``cache.write_behind(key=, store_many=, load=)``: ``set`` updates the cache now and
  queues the write; a worker stores batches of at most ``batch_size`` (the newest value
  per id), retrying with exponential backoff; a batch failing ``max_retries`` + 1 times
  goes to the dead letters (``dead_letters()``, ``replay()``). ``flush()`` blocks until
  this process's writes are stored; ``close()``, ``with`` and interpreter exit flush,
  for at most ``exit_timeout`` seconds: what is still not stored then is kept in the
  journal on disk (see :mod:`cachekit.write.journal`), said in one warning, and queued again
  by the next process that uses the queue.
  The worker is a daemon thread for sync callers, an asyncio task for async ones (the
  first call decides; use one family per object). On Redis the queue is a stream with
  a consumer group (see :mod:`cachekit.write.stream_queue`): writes survive the process that
  queued them, another process finishes them, and delivery is **at least once** (a
  ``store_many`` must be idempotent: an upsert). In memory the queue lives in the
  process, and only its journal file outlives it; an async worker cannot run at exit,
  so close it with ``aclose()`` (its unstored writes go to the journal file at exit).
- Ids keep their number types (:class:`cachekit.write.rules.ItemIds`): ``1``, ``1.0`` and
  ``True`` are one item of ``store_many``'s dict but three cache keys, so an id whose
  numbers are of other types than the first use is an ``InvalidKeyError`` (nothing written).
"""

from __future__ import annotations

import asyncio
import atexit
import functools
import inspect
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypedDict, TypeVar

from ..core.keys import KeyBuilder
from ..core.policy import DEFAULT
from ..exceptions import BackendError, ConfigurationError
from ..tags.rules import tag_list
from ._async_queue import AsyncStreamQueue
from ._async_write import (
    AsyncWriteBehindOps,
    AsyncWriteThroughOps,
    make_async_invalidates,
    make_async_updates,
)
from ._sync_queue import StreamQueue
from ._sync_write import (
    WriteBehindOps,
    WriteThroughOps,
    make_sync_invalidates,
    make_sync_updates,
)
from .behind import MemoryWriteQueue, TaskSignal, ThreadSignal, WriteBehindQueues
from .journal import JournalFiles, default_journal_dir
from .rules import ItemIds, item_key_builder

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = [
    "TagSpec",
    "WriteBehind",
    "WriteBehindOptions",
    "WriteStrategies",
    "WriteThrough",
    "WriteThroughOptions",
]

logger = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])
TagSpec = Iterable[str] | Callable[..., Iterable[str]] | None


class RedisWriteQueue(StreamQueue, AsyncStreamQueue):
    """The stream queue with its sync and async I/O."""


def _tags_builder(
    keys: KeyBuilder, tags: TagSpec
) -> Callable[[tuple[Any, ...], Mapping[str, Any]], Sequence[str]]:
    """Tags for a call: fixed, templates over the arguments (``"user:{user_id}"``), or a
    callable taking the function's arguments."""
    if not tags:
        return lambda args, kwargs: ()
    if callable(tags):
        func = tags
        return lambda args, kwargs: tag_list(func(*args, **kwargs))
    fixed = tag_list(tags)
    if not any("{" in tag for tag in fixed):
        return lambda args, kwargs: fixed

    def formatted(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> Sequence[str]:
        values = keys.values(args, kwargs)
        named = dict(zip(keys.names, values))
        return tuple(tag.format(*values, **named) for tag in fixed)

    return formatted


def _wrap(func: Any, build: Callable[[Callable[..., Any]], Callable[..., Any]]) -> Any:
    """Apply a wrapper builder to a function, classmethod or staticmethod."""
    if isinstance(func, (classmethod, staticmethod)):
        return type(func)(_wrap(func.__func__, build))
    if not callable(func):
        raise TypeError(f"expected a function, not {type(func).__qualname__}")
    return functools.update_wrapper(build(func), func)


class WriteStrategies:
    """The write strategies of one :class:`cachekit.Cache`: a feature object the cache makes
    at construction (``cache._writes``) and forwards ``updates``, ``invalidates``,
    ``write_through`` and ``write_behind`` to (their signatures and docs are the cache's).
    It holds the cache's write-behind queues, which closing the cache flushes first."""

    def __init__(self, cache: Any) -> None:
        self._cache = cache
        self.queues = WriteBehindQueues()

    def updates(self, func: Any, key: str | Callable[..., Any], ttl: Any, tags: TagSpec) -> Any:
        """:meth:`cachekit.Cache.updates`."""
        cache = self._cache
        if key is None:
            raise ConfigurationError("@cache.updates needs key=, the key to store under")
        cache._seconds(ttl)

        def build(f: Callable[..., Any]) -> Callable[..., Any]:
            keys = KeyBuilder(f, key)
            tags_of = _tags_builder(keys, tags)
            if inspect.iscoroutinefunction(f):
                return make_async_updates(cache, f, keys, ttl, tags_of)
            return make_sync_updates(cache, f, keys, ttl, tags_of)

        if func is not None:
            return _wrap(func, build)
        return lambda f: _wrap(f, build)

    def invalidates(
        self,
        func: Any,
        key: str | Callable[..., Any] | Sequence[str | Callable[..., Any]] | None,
        tags: TagSpec,
    ) -> Any:
        """:meth:`cachekit.Cache.invalidates`."""
        cache = self._cache
        if key is None and not tags:
            raise ConfigurationError("@cache.invalidates needs key= or tags=")
        if key is None:
            templates = []
        elif isinstance(key, str) or callable(key):
            templates = [key]
        else:
            templates = list(key)

        def build(f: Callable[..., Any]) -> Callable[..., Any]:
            builders = [KeyBuilder(f, template) for template in templates]
            tags_of = _tags_builder(KeyBuilder(f), tags)
            if inspect.iscoroutinefunction(f):
                return make_async_invalidates(cache, f, builders, tags_of)
            return make_sync_invalidates(cache, f, builders, tags_of)

        if func is not None:
            return _wrap(func, build)
        return lambda f: _wrap(f, build)

    def write_through(
        self,
        key: str | Callable[[Any], Any],
        load: Callable[..., Any] | None,
        store: Callable[..., Any],
        **options: Unpack[WriteThroughOptions],
    ) -> WriteThrough:
        """:meth:`cachekit.Cache.write_through` (``options``: its keyword arguments)."""
        return WriteThrough(self._cache, key, load, store, **options)

    def write_behind(
        self,
        key: str | Callable[[Any], Any],
        store_many: Callable[[dict[Any, Any]], Any],
        load: Callable[..., Any] | None,
        **options: Unpack[WriteBehindOptions],
    ) -> WriteBehind:
        """:meth:`cachekit.Cache.write_behind` (``options``: its keyword arguments)."""
        queue = WriteBehind(self._cache, key, store_many, load, **options)
        self.queues.add(queue)  # cache.close() flushes it first
        return queue

    def close(self) -> None:
        """Flush and stop the thread-driven queues (a task-driven one needs ``aclose``)."""
        self.queues.close()

    async def aclose(self) -> None:
        """Flush and stop every queue (tasks here, threads without blocking the loop)."""
        await self.queues.aclose()


class WriteThroughOptions(TypedDict, total=False):
    """The keyword arguments of :meth:`cachekit.Cache.write_through`, typed once; their
    defaults live in :class:`WriteThrough`'s constructor (tested together, as below)."""

    delete: Callable[..., Any] | None
    ttl: Any
    tags: Iterable[str] | None
    cache_none: bool


class WriteBehindOptions(TypedDict, total=False):
    """The keyword arguments of :meth:`cachekit.Cache.write_behind`, typed once
    (``**options: Unpack[WriteBehindOptions]``); their defaults and checks live in one
    place, :class:`WriteBehind`'s constructor (tests/write/test_write_options.py
    holds the two together)."""

    batch_size: int
    flush_interval: float
    max_retries: int | None
    retry_backoff: float
    retry_max_backoff: float
    claim_after: float
    ttl: Any
    tags: Iterable[str] | None
    name: str | None
    consume: bool
    exit_timeout: float
    journal_dir: str | os.PathLike[str] | bool


class WriteThrough(WriteThroughOps, AsyncWriteThroughOps):
    """``get/set/delete(id)`` and ``aget/aset/adelete(id)`` over a cache and a source."""

    def __init__(
        self,
        cache: Any,
        key: str | Callable[[Any], Any],
        load: Callable[..., Any] | None,
        store: Callable[..., Any],
        *,
        delete: Callable[..., Any] | None = None,
        ttl: Any = DEFAULT,
        tags: Iterable[str] | None = None,
        cache_none: bool = True,
    ) -> None:
        cache._seconds(ttl)
        self._cache = cache
        self._key_of = ItemIds(f"write_through({key!r})").keyed(item_key_builder(key))
        self._loader = load
        self._storer = store
        self._remover = delete
        self._ttl = ttl
        self._tags = tag_list(tags)
        self._cache_none = cache_none

    def key(self, item_id: Any) -> str:
        """The cache key of an item (use it with ``cache.get``)."""
        return self._key_of(item_id)


_JOIN_GRACE = 0.5  # seconds a closing worker gets to finish the call it is in


def _close_at_exit(ref: weakref.ref[WriteBehind]) -> None:
    queue = ref()
    if queue is not None:
        queue._close_at_exit()


class WriteBehind(WriteBehindOps, AsyncWriteBehindOps):
    """A write-behind queue over a cache (made by :meth:`Cache.write_behind`).

    ``set(id, value)`` / ``await aset(...)``, ``get(id)``, ``flush()``, ``close()``,
    ``dead_letters()``, ``replay()``, ``pending``; usable as a (async) context manager.
    ``close()``/``aclose()`` and interpreter exit wait at most ``exit_timeout`` seconds,
    then keep what is not stored in a journal file in ``journal_dir`` (see
    :mod:`cachekit.write.journal`) that the next process starting this queue queues again.
    """

    def __init__(
        self,
        cache: Any,
        key: str | Callable[[Any], Any],
        store_many: Callable[[dict[Any, Any]], Any],
        load: Callable[..., Any] | None = None,
        *,
        batch_size: int = 100,
        flush_interval: float = 1.0,
        max_retries: int | None = 5,
        retry_backoff: float = 0.1,
        retry_max_backoff: float = 10.0,
        claim_after: float = 60.0,
        ttl: Any = DEFAULT,
        tags: Iterable[str] | None = None,
        name: str | None = None,
        consume: bool = True,
        exit_timeout: float = 5.0,
        journal_dir: str | os.PathLike[str] | bool = True,
    ) -> None:
        if not callable(store_many):
            raise ConfigurationError("write_behind needs store_many=, a callable")
        if batch_size < 1:
            raise ConfigurationError("batch_size must be at least 1")
        if flush_interval <= 0:
            raise ConfigurationError("flush_interval must be positive")
        if max_retries is not None and max_retries < 0:
            raise ConfigurationError("max_retries must be >= 0, or None to retry forever")
        if isinstance(exit_timeout, bool) or not (
            isinstance(exit_timeout, (int, float)) and 0 <= exit_timeout < float("inf")
        ):
            raise ConfigurationError(f"exit_timeout must be seconds >= 0, not {exit_timeout!r}")
        cache._seconds(ttl)
        if name is None:
            if not isinstance(key, str):
                raise ConfigurationError("write_behind with a callable key needs name=")
            name = key
        self._cache = cache
        # ids equal across types (1, 1.0, True) would be one store_many item, several entries
        self._key_of = ItemIds(f"write_behind {name!r}").keyed(item_key_builder(key))
        self._loader = load
        self._store_many = store_many
        self._ttl = ttl
        self._tags = tag_list(tags)
        self.name = name
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.max_retries = max_retries
        self.retry_backoff = retry_backoff
        self.retry_max_backoff = retry_max_backoff
        self.consume = consume
        self.exit_timeout = float(exit_timeout)
        self._clock = time.monotonic
        self._queue: Any
        if cache._streams is not None:  # a durable queue next to the entries
            self._queue = RedisWriteQueue(
                cache, name, batch_size, claim_after=claim_after, poll=flush_interval
            )
        else:
            self._queue = MemoryWriteQueue(batch_size, f"{cache.namespace.text}|{name}")
        self._journal_files: JournalFiles | None = None
        if journal_dir is not False:
            where = default_journal_dir() if journal_dir is True else journal_dir
            self._journal_files = JournalFiles(where, self._queue.journal_identity())
        self._journal_taken = False
        self._replayed: list[tuple[Any, list[Any]]] = []  # (taken file, its writes)
        self._spilled: Any = None  # the journal file this queue last wrote
        self._outage_since = None
        self._held, self._retries, self._unacked = [], [], []
        self.retried = self.dead_lettered = 0  # read by metrics exporters
        self._oldest = None
        self._draining = 0
        self._stopping = False
        self._epoch = 0
        self._mode: str | None = None
        self._thread: threading.Thread | None = None
        self._task: asyncio.Task[None] | None = None
        self._start_lock = threading.Lock()
        self._signal = self._progress = None

    @property
    def pending(self) -> int:
        """Writes queued by this process and not yet seen stored."""
        count: int = self._queue.outstanding(False)
        return count

    def key(self, item_id: Any) -> str:
        return self._key_of(item_id)

    # -- starting the worker (thread or task: what cannot be generated) ---------------------
    def _use(self, mode: str) -> bool:
        """True if a worker of this mode is already running."""
        if self._mode is not None and self._mode != mode:
            other = "async (aset/aflush/aclose)" if self._mode == "task" else "sync"
            raise ConfigurationError(
                f"this write-behind queue runs a {self._mode} worker: use its {other} methods"
            )
        return self._mode == mode

    def _start_worker(self) -> None:
        if self._use("thread") and self._thread is not None:
            return
        with self._start_lock:
            if self._thread is not None:
                return
            self._mode = "thread"
            self._signal, self._progress = ThreadSignal(), ThreadSignal()
            self._stopping = False
            thread = threading.Thread(
                target=self._run, name=f"cachekit-write-behind:{self.name}", daemon=True
            )
            self._thread = thread
            thread.start()
            self._at_exit()
            self._take_journal()

    async def _astart_worker(self) -> None:
        task = self._task
        running = self._use("task") and task is not None and not task.done()
        if running and task is not None and task.get_loop() is asyncio.get_running_loop():
            return
        self._mode = "task"
        self._signal, self._progress = TaskSignal(), TaskSignal()
        self._stopping = False
        self._task = asyncio.get_running_loop().create_task(self._arun())
        self._at_exit()
        self._take_journal()

    def _at_exit(self) -> None:
        if not self.__dict__.get("_exit_registered"):
            self.__dict__["_exit_registered"] = True
            atexit.register(_close_at_exit, weakref.ref(self))

    # -- the journal on disk ------------------------------------------------------------------
    def _take_journal(self) -> None:
        """Queue again what processes that exited left in the journal (once per start)."""
        files = self._journal_files
        if files is None or self._journal_taken:
            return
        self._journal_taken = True
        self._spilled = None  # taken back below, if still there
        count = 0
        for path, content in files.take():
            markers = self._queue.load_spilled(content)
            self._replayed.append((path, markers))
            count += len(markers)
        if count:
            logger.warning(
                "write-behind %r: queueing again %d writes left in the journal by a process "
                "that exited before storing them",
                self.name,
                count,
            )
            self._signal.notify()

    def _forget_replayed_journals(self) -> None:
        """Delete a taken journal file once its writes are safe again (in Redis, or
        stored): until then a crash of this process leaves it for the next one."""
        files = self._journal_files
        if files is None or not self._replayed:
            return
        for entry in list(self._replayed):
            path, markers = entry
            if self._queue.spilled_safe(markers):
                files.forget(path)
                self._replayed.remove(entry)

    def _keep_in_journal(self, why: str) -> None:
        """``close()`` or exit gave up: keep what is not stored in a journal file and say
        so in one line (the only line this logs)."""
        count = self._queue.outstanding(False)
        files = self._journal_files
        if not count:
            return
        if files is None:
            logger.error(
                "write-behind %r: %s; %d writes not stored are lost (journal_dir=False)",
                self.name,
                why,
                count,
            )
            return
        records = self._queue.spill_records()
        try:
            path = files.write(records)
        except Exception as exc:
            logger.error(
                "write-behind %r: %s; %d writes not stored are lost: cannot write the "
                "journal in %s: %r",
                self.name,
                why,
                count,
                files.directory,
                exc,
            )
            return
        for taken, _ in self._replayed:  # their writes are in the new file
            files.forget(taken)
        self._replayed = []
        if self._spilled is not None:  # closed before, now exiting: this file has it all
            files.forget(self._spilled)
        self._spilled = path
        self._journal_taken = False  # a restarted worker takes the file back
        in_redis = sum(1 for record in records if record[2] is not None)
        logger.warning(
            "write-behind %r: %s; %d writes not stored yet are kept in the journal %s%s; "
            "the next process that uses this queue queues them again",
            self.name,
            why,
            len(records),
            path,
            f" ({in_redis} of them also still queued in Redis)" if in_redis else "",
        )

    # -- closing ----------------------------------------------------------------------------
    def close(self, timeout: float | None = None) -> None:
        """Flush for at most ``timeout`` seconds (default ``exit_timeout``), then stop the
        worker thread. Writes still not stored are kept in the journal (a file; on Redis
        they stay queued too) and one warning says so: closing never hangs on an
        unreachable Redis or a failing ``store_many``."""
        self._close(timeout, "closing")

    def _close(self, timeout: float | None, when: str) -> None:
        thread = self._thread
        if thread is None:
            return
        limit = self.exit_timeout if timeout is None else timeout
        gave_up = None
        try:
            self.flush(limit)
        except (TimeoutError, BackendError) as exc:
            gave_up = exc
        finally:
            self._stopping = True
            self._signal.notify()
            thread.join(min(_JOIN_GRACE, limit))  # it may be inside a call that times out
            self._thread = None
            self._mode = None
        if gave_up is not None:
            self._keep_in_journal(f"not stored within {limit:g} s of {when}")

    async def aclose(self, timeout: float | None = None) -> None:
        """Flush for at most ``timeout`` seconds (default ``exit_timeout``), then stop the
        worker task; as :meth:`close`."""
        task = self._task
        if task is None or task.done():
            return
        limit = self.exit_timeout if timeout is None else timeout
        gave_up = None
        try:
            await self.aflush(limit)
        except (TimeoutError, BackendError) as exc:
            gave_up = exc
        finally:
            self._stopping = True
            self._signal.notify()
            try:
                await asyncio.wait_for(task, min(_JOIN_GRACE, limit))
            except TimeoutError:
                pass  # cancelled by wait_for: it was inside a call to an unreachable Redis
            finally:
                self._task = None
                self._mode = None
        if gave_up is not None:
            self._keep_in_journal(f"not stored within {limit:g} s of closing")

    def _close_at_exit(self) -> None:
        if self._thread is not None:
            self._close(None, "the program's exit")
        elif self._queue.outstanding(False):  # an async worker cannot run any more
            self._keep_in_journal("the program exited before aclose() stored them")

    def __enter__(self) -> WriteBehind:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    async def __aenter__(self) -> WriteBehind:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"<WriteBehind {self.name!r} pending={self.pending}>"
