"""OpenTelemetry metrics for caches (``Cache(..., metrics="otel")`` or ``metrics=meter``;
the ``otel`` extra: opentelemetry-api, plus an SDK or distro of your choice to export).

Counters the core keeps anyway are observable instruments, read at collection time;
the remote backend's operation durations go to ``db.client.operation.duration`` (the
semantic conventions' histogram, seconds, with ``db.system.name``, ``db.operation.name``
and ``error.type``). Every instrument carries ``cachekit.cache`` (the cache's prefix)::

    cachekit.requests                   {request}  cachekit.layer, cachekit.result
                                        (a near cache: layer near for its L1 hits,
                                        redis for the lookups that went to Redis)
    cachekit.sets                       {entry}    cachekit.layer
    cachekit.evictions                  {entry}    cachekit.layer
    cachekit.entries (gauge)            {entry}    cachekit.layer
    cachekit.stampede.joins             {call}
    cachekit.lock.waits                 {call}
    cachekit.breaker.open (gauge)       1
    cachekit.breaker.transitions        {transition}  cachekit.breaker.state
    cachekit.breaker.pending_invalidations (gauge)
    cachekit.write_behind.queue.depth (gauge), .retries, .dead_letters   cachekit.queue
    cachekit.ratelimit.decisions        {decision}  cachekit.ratelimit.limiter, .outcome
                                        (outcome: allowed, limited, fallback)
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import Any

from . import missing_extra
from .events import Reading, WatchedCaches, outcome, requests_by_layer

try:
    from opentelemetry import metrics as otel_metrics
    from opentelemetry.metrics import CallbackOptions, Meter, Observation
except ModuleNotFoundError as exc:  # pragma: no cover (the extra is installed in tests)
    raise missing_extra(exc, "opentelemetry", "otel") from exc

__all__ = ["OtelExporter", "exporter_for_meter"]

_BOUNDARIES = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0]

_Pick = Callable[[Reading], Iterable[tuple[float, dict[str, Any]]]]


def _requests(r: Reading) -> Iterable[tuple[float, dict[str, Any]]]:
    for layer, result, value in requests_by_layer(r):
        yield value, {"cachekit.layer": layer, "cachekit.result": result}


def _per(name: str, label: str) -> _Pick:
    def pick(r: Reading) -> Iterable[tuple[float, dict[str, Any]]]:
        values: dict[str, int] = getattr(r, name)
        return [(value, {label: key}) for key, value in values.items()]

    return pick


def _one(name: str) -> _Pick:
    return lambda r: [(getattr(r, name), {})]


# (kind, name, unit, description, pick)
_OBSERVED: list[tuple[str, str, str, str, _Pick]] = [
    ("counter", "cachekit.requests", "{request}", "Cache lookups by result", _requests),
    ("counter", "cachekit.sets", "{entry}", "Entries written",
     lambda r: [(r.sets, {"cachekit.layer": r.layer})]),
    ("counter", "cachekit.evictions", "{entry}", "Entries evicted to make room",
     _per("evictions", "cachekit.layer")),
    ("gauge", "cachekit.entries", "{entry}", "Entries held in process",
     _per("entries", "cachekit.layer")),
    ("counter", "cachekit.stampede.joins", "{call}",
     "Callers that waited for a computation in flight", _one("joins")),
    ("counter", "cachekit.lock.waits", "{call}", "Callers that waited for another's lock",
     _one("lock_waits")),
    ("gauge", "cachekit.breaker.open", "1", "1 while the circuit breaker is open",
     _one("breaker_open")),
    ("counter", "cachekit.breaker.transitions", "{transition}", "Circuit breaker changes",
     lambda r: [(r.breaker_opened, {"cachekit.breaker.state": "open"}),
                (r.breaker_closed, {"cachekit.breaker.state": "closed"})]),
    ("gauge", "cachekit.breaker.pending_invalidations", "{invalidation}",
     "Invalidations waiting for the backend", _one("pending_invalidations")),
    ("gauge", "cachekit.write_behind.queue.depth", "{write}", "Writes queued",
     _per("queue_depth", "cachekit.queue")),
    ("counter", "cachekit.write_behind.retries", "{batch}", "Batches retried",
     _per("queue_retries", "cachekit.queue")),
    ("counter", "cachekit.write_behind.dead_letters", "{write}",
     "Writes moved to the dead letters", _per("queue_dead", "cachekit.queue")),
]  # fmt: skip


class OtelExporter(WatchedCaches):
    """Exports the caches that use it through ``meter`` (default: the global meter
    provider's ``cachekit`` meter). One per meter: :func:`exporter_for_meter`."""

    def __init__(self, meter: Meter | None = None) -> None:
        self.meter = otel_metrics.get_meter("cachekit") if meter is None else meter
        super().__init__()
        for kind, name, unit, description, pick in _OBSERVED:
            make = (
                self.meter.create_observable_counter
                if kind == "counter"
                else self.meter.create_observable_gauge
            )
            make(name, callbacks=[self._callback(pick)], unit=unit, description=description)
        self._duration = self.meter.create_histogram(
            "db.client.operation.duration",
            unit="s",
            description="Duration of cache backend operations",
            explicit_bucket_boundaries_advisory=_BOUNDARIES,
        )
        self._decisions = self.meter.create_counter(
            "cachekit.ratelimit.decisions", unit="{decision}", description="Rate limit decisions"
        )
        self._attributes: dict[tuple[str, str, str, str | None], dict[str, Any]] = {}
        self._decided: dict[tuple[str, str, str], dict[str, Any]] = {}

    def _callback(self, pick: _Pick) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def observe(options: CallbackOptions) -> Iterable[Observation]:
            return [
                Observation(value, {"cachekit.cache": r.cache, **attributes})
                for r in self.readings()
                for value, attributes in pick(r)
            ]

        return observe

    def on_operation(
        self, cache: str, layer: str, operation: str, seconds: float, error: str | None
    ) -> None:
        labels = (cache, layer, operation, error)
        attributes = self._attributes.get(labels)
        if attributes is None:
            attributes = {
                "db.system.name": "redis",
                "db.operation.name": operation,
                "cachekit.cache": cache,
                "cachekit.layer": layer,
            }
            if error is not None:
                attributes["error.type"] = error
            self._attributes[labels] = attributes
        self._duration.record(seconds, attributes)

    def on_ratelimit(self, cache: str, limiter: str, allowed: bool, fallback: bool) -> None:
        labels = (cache, limiter, outcome(allowed, fallback))
        attributes = self._decided.get(labels)
        if attributes is None:
            attributes = self._decided.setdefault(
                labels,
                {
                    "cachekit.cache": cache,
                    "cachekit.ratelimit.limiter": limiter,
                    "cachekit.ratelimit.outcome": labels[2],
                },
            )
        self._decisions.add(1, attributes)


_exporters: dict[int, tuple[Any, OtelExporter]] = {}
_exporters_lock = threading.Lock()


def exporter_for_meter(meter: Meter | None) -> OtelExporter:
    """The one exporter of ``meter`` (None: the global ``cachekit`` meter), so that many
    caches on one meter make its instruments once."""
    with _exporters_lock:
        key = 0 if meter is None else id(meter)  # 0: the global meter (a new proxy per ask)
        known = _exporters.get(key)
        if known is not None and known[0] is meter:
            return known[1]
        exporter = OtelExporter(meter)
        _exporters[key] = (meter, exporter)
        return exporter
