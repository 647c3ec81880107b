"""What a cache counts, read when an exporter asks; the events it emits for the rest.

Two halves, so that the hot paths pay (almost) nothing for metrics:

- **Readings** (pull). The core already counts hits, misses, sets, stale values, errors,
  evictions, breaker trips, stampede joins, lock waits and write-behind retries (plain
  ints, for ``cache.stats()``). :func:`read` gathers them into one flat
  :class:`Reading`; exporters call it at scrape time (a Prometheus collector, OpenTelemetry
  observable instruments), so a hit served from memory costs no metrics code at all.
- **Events** (push), for what needs one datum per call: a backend operation's duration,
  a rate-limit decision. The core emits each once, through the cache's :class:`Hub`, to
  the listeners (the exporters). With no listener there is no hub and no wrapper (a rate
  limiter of a cache without one checks one attribute per decision).

A listener is any object with these methods (all optional: a missing one is not called)::

    on_operation(cache: str, layer: str, operation: str, seconds: float, error: str | None)
    on_ratelimit(cache: str, limiter: str, allowed: bool, fallback: bool)

Labels stay bounded: ``cache`` is the cache's prefix, ``layer`` one of ``memory``,
``redis``, ``near`` (a near cache's requests: ``near`` for the hits its in-process L1
served, ``redis`` for the lookups that went to Redis behind it, :func:`requests_by_layer`),
``operation`` a backend method name (:data:`TIMED`), ``error`` an exception class name,
``limiter`` a rate limiter's name (never the identity it limits), its outcome one of
:data:`OUTCOMES`. A key never appears in one.
"""

from __future__ import annotations

import inspect
import logging
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, fields
from typing import Any

__all__ = [
    "OUTCOMES",
    "TIMED",
    "Hub",
    "Listener",
    "Reading",
    "WatchedCaches",
    "add",
    "layer_of",
    "requests_by_layer",
    "outcome",
    "read",
    "timed_backend",
]

logger = logging.getLogger(__name__)

#: backend operations whose duration is measured (one event each, remote backends only)
TIMED = frozenset(
    {
        "get", "set", "add", "delete", "delete_many", "get_many", "set_many", "exists",
        "ttl", "expire", "incr", "delete_pattern", "ping",
    }
)  # fmt: skip

#: a rate-limit decision's outcome: Redis (or the in-process backend) admitted or refused
#: it, or it could not be asked and ``on_error`` decided (whether it admitted or not)
OUTCOMES = ("allowed", "limited", "fallback")


def outcome(allowed: bool, fallback: bool) -> str:
    """The :data:`OUTCOMES` label of a decision."""
    return "fallback" if fallback else "allowed" if allowed else "limited"


class Listener:
    """The listener interface (documentation: any object with these methods will do)."""

    def on_operation(
        self, cache: str, layer: str, operation: str, seconds: float, error: str | None
    ) -> None:
        """A backend operation took ``seconds``; ``error`` is the exception's class name."""

    def on_ratelimit(self, cache: str, limiter: str, allowed: bool, fallback: bool) -> None:
        """A rate limiter (see :mod:`cachekit.ratelimit`) took a hit: admitted or not;
        ``fallback`` when the backend could not be asked and ``on_error`` decided
        (:func:`outcome` makes the label). Peeks, which take nothing, are not reported."""


class Hub:
    """The events one cache emits, fanned out to its listeners (its exporters)."""

    __slots__ = ("_operation", "_ratelimit", "cache", "layer")

    def __init__(self, cache: str, layer: str) -> None:
        self.cache = cache
        self.layer = layer
        self._operation: list[Callable[..., None]] = []
        self._ratelimit: list[Callable[..., None]] = []

    def listen(self, listener: Any) -> None:
        for name, into in (("on_operation", self._operation), ("on_ratelimit", self._ratelimit)):
            method = getattr(listener, name, None)
            if callable(method) and method not in into:
                into.append(method)

    @property
    def times(self) -> bool:
        """Whether any listener wants operation durations."""
        return bool(self._operation)

    @property
    def decisions(self) -> bool:
        """Whether any listener wants rate-limit decisions."""
        return bool(self._ratelimit)

    def operation(self, operation: str, seconds: float, error: str | None) -> None:
        for listener in self._operation:
            try:
                listener(self.cache, self.layer, operation, seconds, error)
            except Exception as exc:  # a broken exporter never fails a cache call
                _listener_failed(listener, exc)

    def ratelimit(self, limiter: str, allowed: bool, fallback: bool = False) -> None:
        """The hook for rate limiters: one call per hit (``limiter`` is the limiter's name;
        ``fallback``: ``on_error`` decided, the backend could not be asked)."""
        for listener in self._ratelimit:
            try:
                listener(self.cache, limiter, allowed, fallback)
            except Exception as exc:
                _listener_failed(listener, exc)


_reported: set[str] = set()


def _listener_failed(listener: Any, exc: Exception) -> None:
    """Log a failing listener once per listener (then it keeps failing quietly)."""
    name = getattr(listener, "__qualname__", repr(listener))
    if name not in _reported:
        _reported.add(name)
        logger.warning("metrics listener %s failed (reported once): %r", name, exc)


@dataclass
class Reading:
    """One cache's counters at one moment (monotonic ones since it was made)."""

    cache: str
    layer: str
    hits: int = 0
    misses: int = 0
    stale: int = 0
    errors: int = 0  # backend errors and corrupt entries
    skipped: int = 0  # calls not sent: the circuit was open
    sets: int = 0
    joins: int = 0  # callers that waited for another's computation in this process
    lock_waits: int = 0  # callers that waited for another process's lock holder
    breaker_open: int = 0
    breaker_opened: int = 0  # transitions to open
    breaker_closed: int = 0  # transitions back to closed
    pending_invalidations: int = 0
    # a near cache: the hits its L1 served, per near layer (with_options copies share one:
    # counted once when their readings are added)
    near_hits: dict[int, int] = field(default_factory=dict)
    evictions: dict[str, int] = field(default_factory=dict)  # per layer
    entries: dict[str, int] = field(default_factory=dict)  # per layer
    queue_depth: dict[str, int] = field(default_factory=dict)  # per write-behind queue
    queue_retries: dict[str, int] = field(default_factory=dict)
    queue_dead: dict[str, int] = field(default_factory=dict)


def layer_of(cache: Any) -> str:
    if not cache.shared:  # memory:// with near=...: it is the near tier itself, no layer added
        return "memory"
    return "near" if cache._options.get("near") is not None else "redis"


def requests_by_layer(reading: Reading) -> list[tuple[str, str, int]]:
    """``(layer, result, count)`` of the lookups of ``reading``: a near cache's L1 hits as
    ``near`` hits, the rest (what went to Redis behind it: hits, misses, stale values,
    errors, calls the open circuit skipped) as ``redis``; other caches under their layer.
    L1 servings the core does not count as hits (a corrupt entry, a counter's mark) are
    left out of ``near``: it never exceeds the hits."""
    hits, layer = reading.hits, reading.layer
    rows = []
    if layer == "near":
        near = min(sum(reading.near_hits.values()), hits)
        rows.append(("near", "hit", near))
        hits, layer = hits - near, "redis"
    rows += [
        (layer, "hit", hits), (layer, "miss", reading.misses), (layer, "stale", reading.stale),
        (layer, "error", reading.errors), (layer, "skipped", reading.skipped),
    ]  # fmt: skip
    return rows


def read(cache: Any) -> Reading:
    """``cache``'s counters now: plain attribute reads, no I/O (never blocks a scrape)."""
    counters, breaker = cache.counters, cache._breaker
    layer = layer_of(cache)
    reading = Reading(
        cache=cache.prefix,
        layer=layer,
        hits=counters.hits,
        misses=counters.misses,
        stale=counters.stale,
        errors=counters.errors + counters.corrupt,
        skipped=counters.skipped,
        sets=counters.sets,
        joins=getattr(counters, "joins", 0),
        lock_waits=getattr(counters, "lock_waits", 0),
        breaker_open=int(breaker.open),
        breaker_opened=breaker.trips,
        breaker_closed=breaker.trips - int(breaker.open),
        pending_invalidations=breaker.pending,
    )
    stats = cache._backend_stats() if cache._backend_stats is not None else {}
    if "evictions" in stats:
        reading.evictions["memory"] = stats["evictions"]
        reading.entries["memory"] = stats.get("entries", 0)
    if "near_hits" in stats:
        source = getattr(cache._backend_stats, "__self__", cache)
        reading.near_hits[id(getattr(source, "layer", source))] = stats["near_hits"]
    if "near_evictions" in stats:
        reading.evictions["near"] = stats["near_evictions"]
        reading.entries["near"] = stats.get("near_entries", 0)
    for queue in list(cache._writes.queues._queues):
        name = str(queue.name)
        reading.queue_depth[name] = reading.queue_depth.get(name, 0) + queue.pending
        reading.queue_retries[name] = getattr(queue, "retried", 0)
        reading.queue_dead[name] = getattr(queue, "dead_lettered", 0)
    return reading


_SUMMED = [f.name for f in fields(Reading) if f.type in ("int", int)]
_PER_LABEL = [f.name for f in fields(Reading) if str(f.type).startswith("dict")]


class WatchedCaches:
    """The caches an exporter reports, held weakly (a dropped cache leaves the scrape);
    exporters build on it and read :meth:`readings` at scrape time."""

    def __init__(self) -> None:
        self._caches: weakref.WeakSet[Any] = weakref.WeakSet()
        self._lock = threading.Lock()

    def watch(self, cache: Any) -> None:
        with self._lock:
            self._caches.add(cache)

    def readings(self) -> list[Reading]:
        with self._lock:
            caches = list(self._caches)
        return add(read(cache) for cache in caches)


def add(readings: Iterable[Reading]) -> list[Reading]:
    """Readings of caches sharing a name and layer summed into one (``with_options``
    copies, two caches on one prefix): one series per label set, as exporters need."""
    merged: dict[tuple[str, str], Reading] = {}
    for reading in readings:
        into = merged.get((reading.cache, reading.layer))
        if into is None:
            merged[(reading.cache, reading.layer)] = reading
            continue
        for name in _SUMMED:
            setattr(into, name, getattr(into, name) + getattr(reading, name))
        into.breaker_open = min(into.breaker_open, 1)
        for name in _PER_LABEL:
            mine: dict[str, int] = getattr(into, name)
            for label, value in getattr(reading, name).items():
                if name == "near_hits":  # one near layer's count, whichever copy read it
                    mine[label] = value
                else:
                    mine[label] = mine.get(label, 0) + value
    return list(merged.values())


# -- the one emission point of durations: a thin wrapper around a remote backend -------------
class _Timed:
    """A backend whose :data:`TIMED` methods report their duration to a hub; everything
    else (attributes, capabilities, other methods) is the backend's own."""

    def __init__(self, backend: Any, hub: Hub) -> None:
        self.__dict__["_inner"] = backend
        self.__dict__["_hub"] = hub

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._inner, name)
        if name in TIMED and callable(value):
            value = _timer(value, name, self._hub)
            self.__dict__[name] = value  # made once per method
        return value

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._inner, name, value)

    @property  # type: ignore[misc]
    def __class__(self) -> type:  # isinstance() checks see the backend (as wrapt's proxies)
        return type(self._inner)


def _timer(method: Callable[..., Any], name: str, hub: Hub) -> Callable[..., Any]:
    clock = time.perf_counter
    emit = hub.operation
    if inspect.iscoroutinefunction(method):

        async def atimed(*args: Any) -> Any:
            started = clock()
            try:
                result = await method(*args)
            except BaseException as exc:
                emit(name, clock() - started, type(exc).__name__)
                raise
            emit(name, clock() - started, None)
            return result

        return atimed

    def timed(*args: Any) -> Any:
        started = clock()
        try:
            result = method(*args)
        except BaseException as exc:
            emit(name, clock() - started, type(exc).__name__)
            raise
        emit(name, clock() - started, None)
        return result

    return timed


def timed_backend(backend: Any, hub: Hub) -> Any:
    """``backend`` reporting its operations' durations to ``hub`` (a wrapped one is
    unwrapped first: a ``with_options`` copy reports to its own hub, once)."""
    if type(backend) is _Timed:
        backend = backend._inner
    return _Timed(backend, hub)
