"""Prometheus metrics for caches (``Cache(..., metrics="prometheus")``; the ``prometheus``
extra: prometheus-client).

One collector per registry reads every watched cache's counters at scrape time (no code on
the hit path); one histogram takes the remote backend's operation durations. Series
(``cache`` is the cache's prefix; caches sharing one are summed)::

    cachekit_requests_total{cache,layer,result}       result: hit, miss, stale, error, skipped
                                                      (a near cache: layer="near" for its L1
                                                      hits, "redis" for what went to Redis)
    cachekit_sets_total{cache,layer}
    cachekit_evictions_total{cache,layer}             memory and near layers
    cachekit_entries{cache,layer}
    cachekit_stampede_joins_total{cache}              waited for this process's computation
    cachekit_lock_waits_total{cache}                  waited for another process's lock holder
    cachekit_breaker_open{cache}                      1 while the circuit is open
    cachekit_breaker_transitions_total{cache,state}   state: open, closed
    cachekit_breaker_pending_invalidations{cache}
    cachekit_write_behind_queue_depth{cache,queue}
    cachekit_write_behind_retries_total{cache,queue}
    cachekit_write_behind_dead_letters_total{cache,queue}
    cachekit_operation_duration_seconds{cache,layer,operation}   histogram (remote backends)
    cachekit_ratelimit_decisions_total{cache,limiter,outcome}    outcome: allowed, limited,
                                                      fallback (on_error decided: Redis down)
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterator, Sequence
from typing import Any

from ..exceptions import ConfigurationError
from . import missing_extra
from .events import WatchedCaches, outcome, requests_by_layer

try:
    from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
    from prometheus_client.registry import Collector
except ModuleNotFoundError as exc:  # pragma: no cover (the extra is installed in tests)
    raise missing_extra(exc, "prometheus_client", "prometheus") from exc

__all__ = ["DURATION_BUCKETS", "PrometheusExporter", "default_exporter"]

#: seconds: from a local Redis round trip (~0.1 ms) to a timeout
DURATION_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
)  # fmt: skip


_default_lock = threading.RLock()
_MARK = "_cachekit_exporter"


class PrometheusExporter(WatchedCaches):
    """Exports the caches that use it into ``registry`` (default: prometheus-client's
    global one). ``Cache(..., metrics=PrometheusExporter(registry=r))`` for a registry of
    your own; ``metrics="prometheus"`` shares one exporter on the global registry."""

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        buckets: Sequence[float] = DURATION_BUCKETS,
    ) -> None:
        self.registry = REGISTRY if registry is None else registry
        with _default_lock:
            if getattr(self.registry, _MARK, None) is not None:
                raise ConfigurationError(
                    "this registry has a cachekit PrometheusExporter already: pass that one "
                    "to every cache (metrics=exporter), or metrics='prometheus' for the "
                    "global registry's"
                )
            setattr(self.registry, _MARK, self)  # the registry keeps its exporter
        super().__init__()
        self._duration = Histogram(
            "cachekit_operation_duration_seconds",
            "Duration of cache backend operations",
            ["cache", "layer", "operation"],
            registry=self.registry,
            buckets=tuple(buckets),
        )
        self._ratelimit = Counter(
            "cachekit_ratelimit_decisions",
            "Rate limiter decisions",
            ["cache", "limiter", "outcome"],
            registry=self.registry,
        )
        self._children: dict[tuple[str, str, str], Any] = {}
        self._decided: dict[tuple[str, str, str], Any] = {}
        self.registry.register(_CacheCollector(self))

    def on_operation(
        self, cache: str, layer: str, operation: str, seconds: float, error: str | None
    ) -> None:
        labels = (cache, layer, operation)
        child = self._children.get(labels)
        if child is None:
            child = self._children.setdefault(labels, self._duration.labels(*labels))
        child.observe(seconds)

    def on_ratelimit(self, cache: str, limiter: str, allowed: bool, fallback: bool) -> None:
        labels = (cache, limiter, outcome(allowed, fallback))
        child = self._decided.get(labels)
        if child is None:
            child = self._decided.setdefault(labels, self._ratelimit.labels(*labels))
        child.inc()


class _CacheCollector(Collector):
    def __init__(self, exporter: PrometheusExporter) -> None:
        self._exporter = weakref.ref(exporter)  # the registry holds the exporter (_MARK)

    def describe(self) -> list[Any]:
        return []  # the families depend on the caches watched: collected at each scrape

    def collect(self) -> Iterator[Any]:
        exporter = self._exporter()
        readings = exporter.readings() if exporter is not None else []

        def counter(name: str, doc: str, labels: list[str]) -> CounterMetricFamily:
            return CounterMetricFamily(f"cachekit_{name}", doc, labels=labels)

        def gauge(name: str, doc: str, labels: list[str]) -> GaugeMetricFamily:
            return GaugeMetricFamily(f"cachekit_{name}", doc, labels=labels)

        requests = counter("requests", "Cache lookups by result", ["cache", "layer", "result"])
        sets = counter("sets", "Entries written", ["cache", "layer"])
        evictions = counter("evictions", "Entries evicted to make room", ["cache", "layer"])
        entries = gauge("entries", "Entries held in process", ["cache", "layer"])
        joins = counter(
            "stampede_joins", "Callers that waited for a computation in flight", ["cache"]
        )
        waits = counter("lock_waits", "Callers that waited for another's lock", ["cache"])
        is_open = gauge("breaker_open", "1 while the circuit breaker is open", ["cache"])
        moves = counter("breaker_transitions", "Circuit breaker state changes", ["cache", "state"])
        pending = gauge(
            "breaker_pending_invalidations", "Invalidations waiting for the backend", ["cache"]
        )
        depth = gauge("write_behind_queue_depth", "Writes queued", ["cache", "queue"])
        retries = counter("write_behind_retries", "Batches retried", ["cache", "queue"])
        dead = counter(
            "write_behind_dead_letters", "Writes moved to the dead letters", ["cache", "queue"]
        )
        lookups: dict[tuple[str, str, str], int] = {}  # a near and a redis cache on one
        for r in readings:  # prefix both count layer="redis": one series
            for layer, result, value in requests_by_layer(r):
                labels = (r.cache, layer, result)
                lookups[labels] = lookups.get(labels, 0) + value
        for labels, value in lookups.items():
            requests.add_metric(list(labels), value)
        for r in readings:
            sets.add_metric([r.cache, r.layer], r.sets)
            for layer, value in r.evictions.items():
                evictions.add_metric([r.cache, layer], value)
            for layer, value in r.entries.items():
                entries.add_metric([r.cache, layer], value)
            joins.add_metric([r.cache], r.joins)
            waits.add_metric([r.cache], r.lock_waits)
            is_open.add_metric([r.cache], r.breaker_open)
            moves.add_metric([r.cache, "open"], r.breaker_opened)
            moves.add_metric([r.cache, "closed"], r.breaker_closed)
            pending.add_metric([r.cache], r.pending_invalidations)
            for queue, value in r.queue_depth.items():
                depth.add_metric([r.cache, queue], value)
                retries.add_metric([r.cache, queue], r.queue_retries.get(queue, 0))
                dead.add_metric([r.cache, queue], r.queue_dead.get(queue, 0))
        yield from (requests, sets, evictions, entries, joins, waits, is_open, moves, pending)
        yield from (depth, retries, dead)


def default_exporter() -> PrometheusExporter:
    """The exporter ``metrics="prometheus"`` uses: the global registry's (made once)."""
    with _default_lock:
        found: PrometheusExporter | None = getattr(REGISTRY, _MARK, None)
        return found if found is not None else PrometheusExporter()
