"""Write-through and write-behind for sync callers: the steps, written once.

GENERATED from ``cachekit/write/_async_write.py`` by
``scripts/unasync.py`` -- do not edit; edit the async source and run the script.
The decisions (batches, backoff, superseded writes) are in :mod:`cachekit.write.rules`;
what differs between a thread and a task worker is in :mod:`cachekit.write.behind`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ..core.keys import KeyBuilder
from ..core.sentinel import MISSING
from ..exceptions import BackendUnavailableError
from ..leases.rules import Lease
from .behind import call_store, call_user
from .rules import (
    DeadLetter,
    QueuedWrite,
    RetryBatch,
    Undecodable,
    after_failure,
    batch_due,
    coalesce,
    entry_order,
    halves,
    retry_delay,
    split_superseded,
    worker_wait,
)

__all__ = [
    "WriteBehindOps",
    "WriteThroughOps",
    "make_sync_invalidates",
    "make_sync_updates",
]

logger = logging.getLogger(__name__)

TagsOf = Callable[[tuple[Any, ...], Mapping[str, Any]], Sequence[str]]


# -- the decorators --------------------------------------------------------------------------
def make_sync_updates(
    cache: Any, func: Callable[..., Any], keys: KeyBuilder, ttl: Any, tags_of: TagsOf
) -> Callable[..., Any]:
    """``@cache.updates``: run the function, then store its result under the key."""
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        value = func(*args, **kwargs)
        # loads in flight read the source before this write: revoked (cachekit.leases.rules)
        key = (cache._space()).key(keys(args, kwargs))
        cache._write_over(key, value, ttl, tags_of(args, kwargs))
        return value

    return wrapper


def make_sync_invalidates(
    cache: Any, func: Callable[..., Any], key_builders: Sequence[KeyBuilder], tags_of: TagsOf
) -> Callable[..., Any]:
    """``@cache.invalidates``: run the function, then delete the keys and the tags."""
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        result = func(*args, **kwargs)
        namespace = cache._space()
        full = [namespace.key(keys(args, kwargs)) for keys in key_builders]
        if full:
            cache._revoke(full)
        tags = tags_of(args, kwargs)
        if tags:
            cache.invalidate_tags(*tags)
        return result

    return wrapper


# -- write-through ---------------------------------------------------------------------------
class WriteThroughOps:
    # set by WriteThrough.__init__ (cachekit/write/strategies.py)
    _cache: Any
    _key_of: Callable[[Any], str]
    _loader: Callable[..., Any] | None
    _storer: Callable[..., Any]
    _remover: Callable[..., Any] | None
    _ttl: Any
    _tags: Sequence[str]
    _cache_none: bool

    def _full_key(self, item_id: Any) -> str:
        full: str = (self._cache._space()).key(self._key_of(item_id))
        return full

    def get(self, item_id: Any, default: Any = None) -> Any:
        """The cached value, or ``load(item_id)``'s, cached (cache-aside)."""
        full = self._full_key(item_id)
        value = self._cache._lookup(full)
        if value is not MISSING:
            return value
        if self._loader is None:
            return default
        lease = Lease.now()  # an invalidation during the load wins (cachekit.leases.rules)
        value = call_user(self._loader, item_id)
        if value is not None or self._cache_none:
            self._cache._store(full, value, self._ttl, self._tags, lease=lease)
        return value

    def set(self, item_id: Any, value: Any) -> None:
        """Write to the source, then to the cache. If the source refuses, its error
        propagates and the cached entry is dropped (the source may have half-changed)."""
        full = self._full_key(item_id)
        try:
            call_user(self._storer, item_id, value)
        except Exception:
            self._cache._revoke([full])
            raise
        self._cache._write_over(full, value, self._ttl, self._tags)

    def delete(self, item_id: Any) -> bool:
        """Delete from the source (if ``delete=`` was given), then drop the cached entry;
        True if there was one."""
        if self._remover is not None:
            call_user(self._remover, item_id)
        return bool(self._cache._revoke([self._full_key(item_id)]))


# -- write-behind ----------------------------------------------------------------------------
class WriteBehindOps:
    # set by WriteBehind.__init__ (cachekit/write/strategies.py)
    _cache: Any
    _key_of: Callable[[Any], str]
    _loader: Callable[..., Any] | None
    _store_many: Callable[..., Any]
    _ttl: Any
    _tags: Sequence[str]
    _queue: Any
    _signal: Any  # wakes the worker
    _progress: Any  # wakes flush() callers
    _clock: Callable[[], float]
    batch_size: int
    flush_interval: float
    max_retries: int | None
    retry_backoff: float
    retry_max_backoff: float
    consume: bool
    _held: list[QueuedWrite]
    _oldest: float | None
    _retries: list[RetryBatch]
    _unacked: list[QueuedWrite]
    _replayed: list[tuple[Any, list[Any]]]
    _draining: int
    _stopping: bool
    _epoch: int
    exit_timeout: float
    _outage_since: float | None  # when the worker last started failing to reach the queue
    retried: int  # batches (or halves) scheduled for another try
    dead_lettered: int  # writes moved to the dead letters

    def _forget_replayed_journals(self) -> None:
        raise NotImplementedError  # cachekit.write.strategies.WriteBehind

    def _full_key(self, item_id: Any) -> str:
        full: str = (self._cache._space()).key(self._key_of(item_id))
        return full

    def _start_worker(self) -> None:
        raise NotImplementedError  # cachekit.write.strategies.WriteBehind: a thread, or a task

    # -- the caller's side ------------------------------------------------------------------
    def set(self, item_id: Any, value: Any) -> None:
        """Queue the write to the source and update the cache now."""
        full = self._full_key(item_id)  # first: an id refused (ItemIds) queues nothing
        self._start_worker()
        if self._queue.push(item_id, value):
            self._signal.notify()
        self._cache._store(full, value, self._ttl, self._tags)

    def get(self, item_id: Any, default: Any = None) -> Any:
        """The cached value; else this process's newest queued write of it; else
        ``load(item_id)``'s, cached."""
        full = self._full_key(item_id)
        value = self._cache._lookup(full)
        if value is not MISSING:
            return value
        value = self._queue.unstored(item_id)
        if value is MISSING:
            if self._loader is None:
                return default
            value = call_user(self._loader, item_id)
        self._cache._store(full, value, self._ttl, self._tags)
        return value

    def flush(self, timeout: float | None = None, *, shared: bool = False) -> None:
        """Block until every write queued here is stored (or dead-lettered). ``shared``:
        until the whole queue (every process's writes, Redis) is empty.

        :class:`TimeoutError` after ``timeout`` seconds. Without a timeout, while the
        queue's Redis does not answer: :class:`~cachekit.BackendUnavailableError` once it
        has not answered for ``exit_timeout`` seconds (the writes wait in this process's
        journal, and are queued when it answers)."""
        self._start_worker()
        started = self._clock()
        deadline = None if timeout is None else started + timeout
        self._draining += 1
        looked = self._queue.looks  # shared: judge by a look at the queue taken after now
        try:
            self._signal.notify()
            while True:
                seen = self._progress.generation
                if self._drained(shared) and (not shared or self._queue.looks > looked):
                    return
                now = self._clock()
                left = None if deadline is None else deadline - now
                if left is not None and left <= 0:
                    raise TimeoutError(
                        f"write-behind flush: {self._queue.outstanding(shared)} writes "
                        f"still queued after {timeout}s"
                    )
                outage = self._outage_since
                if deadline is None and outage is not None:
                    left = max(outage, started) + self.exit_timeout - now
                    if left <= 0:
                        raise BackendUnavailableError(
                            f"write-behind flush: the queue's Redis has not answered for "
                            f"{self.exit_timeout}s; {self._queue.outstanding(shared)} writes "
                            "wait in this process's journal and are queued when it answers"
                        )
                self._progress.wait(seen, left)
        finally:
            self._draining -= 1

    def _drained(self, shared: bool) -> bool:
        if self._queue.outstanding(shared):
            return False
        if self._replayed:  # a taken journal file is deleted by the worker's next step
            return False
        return not (shared and (self._held or self._retries or self._unacked))

    def dead_letters(self) -> list[DeadLetter]:
        """Batches ``store_many`` refused ``max_retries`` + 1 times, oldest first."""
        letters: list[DeadLetter] = self._queue.dead_letters()
        return letters

    def replay(self, letters: Sequence[DeadLetter] | None = None) -> int:
        """Queue dead-lettered writes again (all, or those given); the number queued."""
        chosen = self._queue.dead_letters() if letters is None else list(letters)
        for letter in chosen:  # an id refused (ItemIds) raises now, with every letter kept
            for item_id in letter.items:
                if not isinstance(item_id, Undecodable):
                    self._cache._ns.key(self._key_of(item_id))  # the check only: no I/O
        count = 0
        for letter in self._queue.take_dead(chosen):
            for item_id, value in letter.items.items():
                if isinstance(item_id, Undecodable):  # as it was: stored if now decodable
                    self._start_worker()
                    self._queue.push_raw(item_id.raw_id, item_id.raw_value)
                else:
                    self.set(item_id, value)
                count += 1
        self._signal.notify()
        return count

    # -- the worker -------------------------------------------------------------------------
    def _run(self) -> None:
        outages = 0
        while not self._stopping:
            seen = self._signal.generation
            try:
                busy = self._step()
                outages = 0
                self._outage_since = None
            except Exception as exc:  # the queue's backend failed: keep everything, retry
                outages += 1
                if self._outage_since is None:
                    self._outage_since = self._clock()
                if outages == 1:
                    logger.warning("write-behind worker: %s (retrying)", exc)
                self._progress.notify()
                wait = retry_delay(outages, self.retry_backoff, self.retry_max_backoff)
                self._signal.wait(seen, wait)
                continue
            self._progress.notify()
            if not busy:
                self._signal.wait(seen, self._idle_wait())

    def _idle_wait(self) -> float:
        poll = min(self.flush_interval, 0.05) if self._draining else self.flush_interval
        next_retry = min((r.due for r in self._retries), default=None)
        return worker_wait(self._clock(), self._oldest, self.flush_interval, next_retry, poll)

    def _step(self) -> bool:
        """One round: acknowledge, retry what is due, pull, store a due batch."""
        now = self._clock()
        draining = self._draining > 0
        self._queue.maintain(now, draining)
        self._forget_replayed_journals()
        if self._queue.epoch != self._epoch:  # Redis lost the queue; it was queued again
            self._epoch = self._queue.epoch
            self._held, self._retries, self._unacked, self._oldest = [], [], [], None
        busy = False
        if self._unacked:
            self._ack()
            busy = True
        for retry in [r for r in self._retries if r.due <= now]:
            self._retries.remove(retry)
            self._store_batch(retry.writes, retry.attempts)
            busy = True
        room = self.batch_size - len(self._held)
        if self.consume and room > 0:
            holding = [w.entry for w in self._held]
            holding += [w.entry for r in self._retries for w in r.writes]
            holding += [w.entry for w in self._unacked]
            pulled = self._queue.pull(room, holding)
            if pulled:
                if not self._held:
                    self._oldest = now
                self._held.extend(pulled)
                busy = True
        if batch_due(
            len(self._held), self.batch_size, self._oldest, now, self.flush_interval, draining
        ):
            batch = self._held[: self.batch_size]
            del self._held[: self.batch_size]
            self._oldest = now if self._held else None
            self._store_batch(batch, 0)
            busy = True
        return busy

    def _schedule(self, writes: list[QueuedWrite], attempts: int, soon: bool = False) -> None:
        backoff = 1 if soon else max(attempts, 1)
        delay = retry_delay(backoff, self.retry_backoff, self.retry_max_backoff)
        self._retries.append(RetryBatch(writes, attempts, self._clock() + delay))

    def _store_batch(self, writes: list[QueuedWrite], attempts: int) -> None:
        writes = self._queue.redecode(writes)
        try:
            latest = self._queue.latest(writes)
        except Exception:
            self._schedule(writes, attempts)  # keep them; _run reports the outage
            raise
        current, superseded = split_superseded(writes, latest)
        # A write that does not decode (a poison entry) is set aside, retried alone and
        # then dead-lettered: the rest of its batch is stored now.
        poison = [w for w in current if isinstance(w.item_id, Undecodable)]
        current = [w for w in current if not isinstance(w.item_id, Undecodable)]
        stored = True
        if current:
            try:
                call_store(self._store_many, coalesce(current))
            except Exception as exc:
                stored = False
                error = repr(exc)
                self._batch_failed(current, superseded, attempts + 1, error, "store_many")
        if stored:
            self._unacked.extend([*current, *superseded, *self._drop_older(current)])
            self._ack()
        if poison:
            error = poison[0].item_id.error
            self._batch_failed(poison, [], attempts + 1, error, "decoding", split=False)

    def _drop_older(self, stored: Sequence[QueuedWrite]) -> list[QueuedWrite]:
        """The older writes of the ids just stored that this worker still holds (a batch
        waiting for its retry, writes pulled again), taken out: they are superseded.

        Storing one later would put back an older value: the queue's newest-entry mark of
        an id is forgotten once its newest write is acknowledged, so a retried older write
        would then look current (a batch whose store or whose look at the queue failed
        is retried after a backoff, while the newer write is pulled and stored)."""
        newest: dict[Any, tuple[int, int]] = {}
        for write in stored:
            order = entry_order(write.entry)
            if newest.get(write.item_id, order) <= order:
                newest[write.item_id] = order

        def older(write: QueuedWrite) -> bool:
            if isinstance(write.item_id, Undecodable):
                return False
            order = newest.get(write.item_id)
            return order is not None and entry_order(write.entry) < order

        dropped = [w for w in self._held if older(w)]
        if dropped:
            self._held = [w for w in self._held if not older(w)]
        for retry in self._retries:
            gone = [w for w in retry.writes if older(w)]
            if gone:
                dropped += gone
                retry.writes = [w for w in retry.writes if not older(w)]
        self._retries = [r for r in self._retries if r.writes]
        return dropped

    def _batch_failed(
        self,
        current: list[QueuedWrite],
        superseded: list[QueuedWrite],
        attempts: int,
        error: str,
        what: str,
        split: bool = True,
    ) -> None:
        """``current`` failed ``attempts`` times: retry it later, split it, or dead-letter
        it (see :func:`cachekit.write.rules.after_failure`)."""
        writes = [*current, *superseded]
        decision = after_failure(attempts, self.max_retries, len(current) if split else 1)
        if decision != "dead":
            self.retried += 1
        if decision == "retry":
            logger.warning(
                "write-behind %s failed (attempt %d), retrying %d writes: %s",
                what,
                attempts,
                len(current),
                error,
            )
            self._schedule(writes, attempts)
            return
        if decision == "split":  # isolate the write(s) it refuses; the rest get stored
            first, second = halves(current)
            logger.warning(
                "write-behind %s failed %d times; trying the %d writes in halves to find "
                "the ones it refuses: %s",
                what,
                attempts,
                len(current),
                error,
            )
            self._schedule([*first, *superseded], attempts, soon=True)
            self._schedule(second, attempts, soon=True)
            return
        logger.error(
            "write-behind %s failed %d times; %d writes moved to the dead letters "
            "(replay() queues them again): %s",
            what,
            attempts,
            len(current),
            error,
        )
        try:
            self._queue.dead(current, superseded, error, attempts)
        except Exception:
            self._schedule(writes, attempts)
            raise
        self.dead_lettered += len(current)

    def _ack(self) -> None:
        writes = list(self._unacked)
        self._queue.ack(writes)
        # only now: if acknowledging failed they stay, and are acknowledged next round
        done = {w.entry for w in writes}
        self._unacked = [w for w in self._unacked if w.entry not in done]
