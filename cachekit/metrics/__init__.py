"""Metrics and health for caches: ``Cache(..., metrics="prometheus")``, ``metrics="otel"``
(or an OpenTelemetry ``Meter``, or an exporter object), ``cache.health()``.

The exporters only listen: they read the counters the core keeps anyway at scrape time
and take the few per-call events (operation durations) the core emits once
(:mod:`cachekit.metrics.events`). :mod:`.prometheus` and :mod:`.otel` need their extras
(``cachekit[prometheus]``, ``cachekit[otel]``); importing this package needs neither.
"""

from __future__ import annotations

from typing import Any

from ..exceptions import ConfigurationError
from .events import Hub, Listener, Reading, layer_of, read, timed_backend

__all__ = ["Hub", "Listener", "Reading", "attach", "exporter_for", "hub_of", "read"]


def missing_extra(exc: ModuleNotFoundError, module: str, extra: str) -> Exception:
    """The error for an exporter whose library is not installed (``exc`` itself when what
    is missing is something else)."""
    if exc.name is None or exc.name.partition(".")[0] != module:
        return exc
    return ConfigurationError(
        f"metrics={extra!r} needs {module}, which is not installed: pip install 'cachekit[{extra}]'"
    )


def exporter_for(spec: Any) -> Any:
    """The exporter a ``metrics=`` value names: ``"prometheus"`` (the default registry's),
    ``"otel"`` (the global meter provider's ``cachekit`` meter), an OpenTelemetry
    ``Meter``, or an exporter object (anything with ``watch(cache)``) as it is."""
    if isinstance(spec, str):
        if spec == "prometheus":
            from .prometheus import default_exporter

            return default_exporter()
        if spec == "otel":
            from .otel import exporter_for_meter

            return exporter_for_meter(None)
        raise ConfigurationError(
            f"metrics={spec!r}: it must be 'prometheus', 'otel', an OpenTelemetry Meter "
            "or an exporter"
        )
    if callable(getattr(spec, "watch", None)):
        return spec
    if callable(getattr(spec, "create_histogram", None)):  # an OpenTelemetry Meter
        from .otel import exporter_for_meter

        return exporter_for_meter(spec)
    raise ConfigurationError(
        f"metrics={spec!r}: it must be 'prometheus', 'otel', an OpenTelemetry Meter or an "
        "exporter (an object with watch(cache))"
    )


def attach(cache: Any, spec: Any) -> Hub:
    """Let the exporter ``spec`` names watch ``cache``: it reads the cache's counters when
    scraped, and (if it listens to durations) the cache's remote backend is timed."""
    exporter = exporter_for(spec)
    hub = Hub(cache.prefix, layer_of(cache))
    hub.listen(exporter)
    exporter.watch(cache)
    cache.__dict__["_metrics_hub"] = hub
    if hub.times and cache.shared:  # memory: nothing worth timing, nothing to pay
        for side in ("_backend", "_abackend"):
            if side in cache.__dict__:
                cache.__dict__[side] = timed_backend(cache.__dict__[side], hub)
    return hub


def hub_of(cache: Any) -> Hub | None:
    """The events hub of a cache built with ``metrics=``, or None: the hook a feature
    emitting per-call events uses (``hub.ratelimit(limiter, allowed, fallback)``)."""
    hub: Hub | None = cache.__dict__.get("_metrics_hub")
    return hub
