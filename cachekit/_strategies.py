"""The decisions of the write strategies, as plain functions (no I/O, no clock of their own).

Write-through and write-behind differ from cache-aside only in *when* the source is
written; what to write, when a batch is due, how long to back off, and which queued
writes a newer write has superseded are decided here, shared by the thread and the
task workers and by the memory and Redis queues, and tested without either.
"""

from __future__ import annotations

import string
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

from ._keys import normalize_key
from .exceptions import ConfigurationError

__all__ = [
    "DeadLetter",
    "QueuedWrite",
    "RetryBatch",
    "after_failure",
    "batch_due",
    "coalesce",
    "entry_order",
    "item_key_builder",
    "retry_delay",
    "split_superseded",
    "worker_wait",
]


class QueuedWrite(NamedTuple):
    """One ``set(item_id, value)`` waiting in a write-behind queue.

    ``entry`` is the queue's own id for it: an increasing int in memory, a stream entry
    id (``b"1700000000000-3"``) in Redis. Later writes have larger entries.
    """

    entry: Any
    item_id: Any
    value: Any


@dataclass(eq=False)
class DeadLetter:
    """Writes that ``store_many`` refused ``attempts`` times in a row; replayable."""

    items: dict[Any, Any]
    error: str
    attempts: int
    entries: list[Any] = field(default_factory=list)


class RetryBatch:
    """A batch whose store failed ``attempts`` times, to be tried again at ``due``."""

    __slots__ = ("attempts", "due", "writes")

    def __init__(self, writes: list[QueuedWrite], attempts: int, due: float) -> None:
        self.writes = writes
        self.attempts = attempts
        self.due = due


def entry_order(entry: Any) -> tuple[int, int]:
    """Sort key of a queue entry id (``int``, or Redis ``"ms-seq"`` as str or bytes)."""
    if isinstance(entry, int):
        return (entry, 0)
    text = entry.decode() if isinstance(entry, (bytes, bytearray)) else str(entry)
    millis, _, seq = text.partition("-")
    return (int(millis), int(seq or 0))


def split_superseded(
    writes: Sequence[QueuedWrite], latest: Mapping[Any, Any]
) -> tuple[list[QueuedWrite], list[QueuedWrite]]:
    """``(current, superseded)``: a write is superseded when a later write of the same id
    is queued (``latest[item_id]`` newer): storing it now could overwrite newer data, and
    the newer write will be stored anyway. Unknown ids (``latest`` lost) count as current.
    """
    current: list[QueuedWrite] = []
    superseded: list[QueuedWrite] = []
    for write in writes:
        newest = latest.get(write.item_id)
        if newest is not None and entry_order(newest) > entry_order(write.entry):
            superseded.append(write)
        else:
            current.append(write)
    return current, superseded


def coalesce(writes: Iterable[QueuedWrite]) -> dict[Any, Any]:
    """``{item_id: value}`` in queue order, the last write of each id winning."""
    ordered = sorted(writes, key=lambda write: entry_order(write.entry))
    return {write.item_id: write.value for write in ordered}


def retry_delay(attempt: int, base: float, cap: float) -> float:
    """Exponential backoff after the ``attempt``-th failure (1, 2, ...), capped."""
    return float(min(cap, base * 2 ** max(0, attempt - 1)))


def after_failure(attempts: int, max_retries: int | None) -> Literal["retry", "dead"]:
    """After ``attempts`` failed stores of a batch: retry it, or dead-letter it.
    ``max_retries=None`` retries forever."""
    if max_retries is None or attempts <= max_retries:
        return "retry"
    return "dead"


def batch_due(
    held: int,
    batch_size: int,
    oldest_at: float | None,
    now: float,
    interval: float,
    draining: bool,
) -> bool:
    """Store the held writes now? When a batch is full, when the oldest has waited
    ``interval``, or when someone is flushing."""
    if held == 0:
        return False
    if held >= batch_size or draining:
        return True
    return oldest_at is not None and now - oldest_at >= interval


def worker_wait(
    now: float,
    oldest_at: float | None,
    interval: float,
    next_retry_at: float | None,
    poll: float,
) -> float:
    """How long an idle worker may sleep: until the held batch is due, the next retry,
    or the next look at the shared queue (``poll``), whichever comes first."""
    deadline = now + poll
    if oldest_at is not None:
        deadline = min(deadline, oldest_at + interval)
    if next_retry_at is not None:
        deadline = min(deadline, next_retry_at)
    return max(0.0, deadline - now)


def item_key_builder(key: str | Callable[[Any], Any]) -> Callable[[Any], str]:
    """The cache key of item ``item_id``: ``"user:{}"`` / ``"user:{id}"`` templates
    (one field, filled with the id) or a callable ``key(item_id)``."""
    if callable(key):
        func = key
        return lambda item_id: normalize_key(func(item_id))
    if not isinstance(key, str):
        raise ConfigurationError(f"key must be a template such as 'user:{{}}', not {key!r}")
    fields = [name for _, name, _, _ in string.Formatter().parse(key) if name is not None]
    if len(fields) != 1:
        raise ConfigurationError(
            f"key template {key!r} must have exactly one field for the id, e.g. 'user:{{}}'"
        )
    name = fields[0]
    if name == "" or name.isdigit():
        return lambda item_id: normalize_key(key.format(item_id))
    return lambda item_id: normalize_key(key.format(**{name: item_id}))
