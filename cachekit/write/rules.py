"""The decisions of the write strategies, as plain functions (no I/O, no clock of their own).

Write-through and write-behind differ from cache-aside only in *when* the source is
written; what to write, when a batch is due, how long to back off, and which queued
writes a newer write has superseded are decided here, shared by the thread and the
task workers and by the memory and Redis queues, and tested without either.
"""

from __future__ import annotations

import base64
import math
import string
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time
from decimal import Decimal
from typing import Any, Literal, NamedTuple

import orjson

from ..core.keys import KeyTemplate, normalize_key
from ..exceptions import ConfigurationError, InvalidKeyError

__all__ = [
    "DeadLetter",
    "ItemIds",
    "QueuedWrite",
    "RetryBatch",
    "after_failure",
    "batch_due",
    "Undecodable",
    "coalesce",
    "decode_id",
    "encode_id",
    "entry_order",
    "halves",
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


@dataclass(frozen=True)
class Undecodable:
    """A queued write the worker could not decode (written by other code, another
    serializer or secret, or corrupted): its raw fields, kept as they are, so that it can be
    dead-lettered and replayed without losing a byte, and never wedges its batch."""

    raw_id: bytes
    raw_value: bytes
    error: str


# -- item ids: a canonical, type-faithful encoding -------------------------------------------
# A write-behind id travels through Redis (the stream, the ``latest`` hash): it must come
# back as the same value of the same type (a tuple id must not become an unhashable list,
# a UUID a str), and equal ids must encode to equal bytes, so that writes coalesce. JSON
# with tags: a JSON array is a tuple (a list cannot be an id), an object is a tagged
# scalar; str, int, float, bool and None are themselves. Exact types only (a subclass such
# as an Enum member could not come back as itself). Values that compare equal but are
# spelled differently (Decimal("1.0") and Decimal("1.00"), one instant in two time zones)
# are kept as spelled, so they are different ids.
_INT64 = 2**63


def _id_tree(item_id: Any) -> Any:
    kind = type(item_id)
    if item_id is None or kind is str or kind is bool:
        return item_id
    if kind is int:
        return item_id if -_INT64 <= item_id < _INT64 else {"i": str(item_id)}
    if kind is float:
        if not math.isfinite(item_id):
            return {"f": repr(item_id)}
        return item_id if item_id else 0.0  # -0.0 == 0.0: one id, as in a dict
    if kind is tuple:
        return [_id_tree(part) for part in item_id]
    if kind is bytes:
        return {"b": base64.b64encode(item_id).decode()}
    if kind is frozenset:
        parts = sorted(orjson.dumps(_id_tree(part)) for part in item_id)
        return {"fs": [orjson.loads(part) for part in parts]}
    if kind is uuid.UUID:
        return {"u": str(item_id)}
    if kind is datetime:
        return {"dt": item_id.isoformat()}
    if kind is date:
        return {"d": item_id.isoformat()}
    if kind is time:
        return {"t": item_id.isoformat()}
    if kind is Decimal:
        return {"D": str(item_id)}
    raise InvalidKeyError(
        "a write-behind item id is a str, int, float, bool, None, bytes, UUID, datetime, "
        f"date, time, Decimal, or a tuple or frozenset of those; got {kind.__qualname__} "
        "(pass its plain value, e.g. an Enum's .value)"
    )


_TAGGED: dict[str, Callable[[Any], Any]] = {
    "i": int,
    "f": float,
    "b": base64.b64decode,
    "u": uuid.UUID,
    "dt": datetime.fromisoformat,
    "d": date.fromisoformat,
    "t": time.fromisoformat,
    "D": Decimal,
}


def _from_tree(tree: Any) -> Any:
    if isinstance(tree, list):
        return tuple(_from_tree(part) for part in tree)
    if isinstance(tree, dict):
        ((tag, payload),) = tree.items()
        if tag == "fs":
            return frozenset(_from_tree(part) for part in payload)
        return _TAGGED[tag](payload)
    return tree


def encode_id(item_id: Any) -> bytes:
    """The canonical bytes of a write-behind item id (:class:`InvalidKeyError` if the type
    cannot travel faithfully)."""
    return orjson.dumps(_id_tree(item_id))


def decode_id(data: bytes) -> Any:
    """The id :func:`encode_id` encoded, of the same type; ValueError (or a subclass) if
    ``data`` is not such an encoding."""
    try:
        return _from_tree(orjson.loads(data))
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"not an encoded item id: {data[:60]!r}: {exc}") from None


# -- item ids that compare equal across types -------------------------------------------------
# 1, 1.0, True and Decimal(1) are one key of a dict (``store_many``'s argument, and most
# sources) but three cache keys (u:1, u:1.0, u:True): a queue given both would make one
# write of them while the cache kept each, then serve values the source does not hold.
# Only numbers compare equal across the id types (an int never equals a str), so the
# rule is: at each place of an id, numbers keep the type of their first use there. A
# place is the id's structure with its numbers' types left out (``("t", ("n", str))``
# for ``(1, "a")``); a new id of a known place with other number types is refused.
_NUMBER_TYPES = frozenset({bool, int, float, Decimal})
_MAX_PLACES = 1024  # distinct id structures remembered (a program uses a handful)


def _id_place(item_id: Any) -> tuple[Any, Any, bool]:
    """``(place, number types, has a number)`` of an id; a NaN is refused (it equals no
    id, itself included: a source could never find it again; a signalling one cannot
    even be compared)."""
    kind = type(item_id)
    if kind in _NUMBER_TYPES:
        if (kind is float and math.isnan(item_id)) or (kind is Decimal and item_id.is_nan()):
            raise InvalidKeyError(f"an item id cannot be NaN (it equals no id): {item_id!r}")
        return "n", kind, True
    if kind is tuple or kind is frozenset:
        parts = [_id_place(part) for part in item_id]
        places = tuple(place for place, _, _ in parts)
        types = tuple(types for _, types, _ in parts)
        numbered = any(numbered for _, _, numbered in parts)
        if kind is frozenset:  # no order: the element places and types as sets
            return ("fs", frozenset(places)), frozenset(types), numbered
        return ("t", places), types, numbered
    return kind, None, False


class ItemIds:
    """Checks the ids of one write-through or write-behind object before their key is made:
    an id whose numbers are of other types than the first id of its structure (``1.0`` or
    ``True`` after ``1``, ``("a", 1.0)`` after ``("a", 1)``) is an
    :class:`InvalidKeyError` (nothing is written), as is a NaN. The id ``-0.0`` is keyed
    as ``0.0`` (equal: one id). Per object, in this process: processes sharing a Redis
    queue must use the same id types. Not covered: a frozenset mixing number types at
    once (``{1, 2.0}`` and ``{1.0, 2}``), a Decimal spelled two ways (``1.0``, ``1.00``),
    one instant in two time zones."""

    __slots__ = ("_first", "_name")

    def __init__(self, name: str) -> None:
        self._name = name
        self._first: dict[Any, tuple[Any, Any]] = {}  # place -> (its number types, an id)

    def check(self, item_id: Any) -> Any:
        """``item_id`` as it is keyed (:class:`InvalidKeyError` if refused)."""
        kind = type(item_id)
        if kind is float and item_id == 0.0:
            item_id = 0.0  # -0.0 == 0.0: one id, one key (as encode_id makes it one write)
        if kind is not tuple and kind is not frozenset and kind not in _NUMBER_TYPES:
            return item_id  # a str, bytes, UUID, date...: equal only to its own type
        place, types, numbered = _id_place(item_id)
        if not numbered:
            return item_id
        first = self._first.get(place)
        if first is None:
            if len(self._first) < _MAX_PLACES:
                self._first.setdefault(place, (types, item_id))
            return item_id
        if first[0] != types:
            raise InvalidKeyError(
                f"{self._name}: item id {item_id!r} has numbers of other types than "
                f"{first[1]!r}, used before: ids equal in Python but of different types "
                "(1, 1.0, True) are one item of a dict (store_many's, and most sources') "
                "but different cache keys; pass ids of one type"
            )
        return item_id

    def keyed(self, key_of: Callable[[Any], str]) -> Callable[[Any], str]:
        """``key_of`` over the checked id."""
        check = self.check
        return lambda item_id: key_of(check(item_id))


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


def after_failure(
    attempts: int, max_retries: int | None, size: int = 1
) -> Literal["retry", "split", "dead"]:
    """After ``attempts`` failed stores of a batch of ``size`` writes: retry it; or, out of
    retries, split it (each half is tried once more, and split again if it fails) so that
    one write its store refuses (a poison value) does not take innocent writes to the
    dead letters with it; or dead-letter it (a single write). ``max_retries=None``
    retries forever."""
    if max_retries is None or attempts <= max_retries:
        return "retry"
    return "split" if size > 1 else "dead"


def halves(writes: Sequence[Any]) -> tuple[list[Any], list[Any]]:
    """A failing batch cut in two, in queue order."""
    middle = len(writes) // 2
    return list(writes[:middle]), list(writes[middle:])


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
    (one field, filled with the id, rendered as ``@cached`` renders its ``key=``
    templates: an id that would format as its address is an :class:`InvalidKeyError`, a
    value is escaped where literal text follows it) or a callable ``key(item_id)``."""
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
    root = fields[0].split(".", 1)[0].split("[", 1)[0]
    template = KeyTemplate(key, (root or "item_id",), True)
    return lambda item_id: template.key((item_id,))
