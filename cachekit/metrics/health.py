"""``cache.health()`` / ``await cache.ahealth()``: is the cache's backend answering, now?

A report answers within ``timeout`` (default :data:`HEALTH_TIMEOUT`) whatever the backend
does: the ping runs on its own (a daemon thread, or a task for ``ahealth``) and the caller
waits at most ``timeout`` for it. A ping still waiting (a frozen Redis) is reused by the
next check rather than joined by another, so polling a dead backend never piles up
threads or connections. Nothing here trips the circuit breaker or counts as an error.

The report (JSON-ready)::

    {"ok": bool, "backend": "redis backend", "latency_ms": 0.21 | None,
     "breaker": "closed" | "open", "pending_invalidations": 0,
     "write_behind": {queue name: writes queued}, "entries": {layer: n} (memory, near),
     "error": None | "why not ok"}
"""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

from .events import read

__all__ = ["HEALTH_TIMEOUT", "ahealth", "health"]

HEALTH_TIMEOUT = 0.025
"""Seconds a health check waits for the backend's answer."""


def _report(cache: Any) -> dict[str, Any]:
    reading = read(cache)
    return {
        "ok": False,
        "backend": cache._describe_backend(),
        "latency_ms": None,
        "breaker": cache._breaker.state,
        "pending_invalidations": reading.pending_invalidations,
        "write_behind": reading.queue_depth,
        "entries": reading.entries,
        "error": None,
    }


def _finish(report: dict[str, Any], answered: Any, seconds: float, error: str | None) -> None:
    if error is None and not answered:
        error = "the backend did not answer the ping"
    report["ok"] = error is None and report["breaker"] == "closed"
    report["latency_ms"] = round(seconds * 1000, 3) if error is None else None
    if error is None and report["breaker"] != "closed":
        error = "the circuit breaker is open (the backend failed recently)"
    report["error"] = error


class _Probe:
    """At most one ping in flight per cache (sync side)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._future: Future[tuple[Any, float]] | None = None

    def ping(self, backend: Any) -> Future[tuple[Any, float]]:
        with self._lock:
            future = self._future
            if future is None or future.done():
                future = self._future = Future()
                threading.Thread(
                    target=_run, args=(backend, future), name="cachekit-health", daemon=True
                ).start()
            return future


def _run(backend: Any, future: Future[tuple[Any, float]]) -> None:
    started = time.perf_counter()
    try:
        answered = backend.ping()
    except BaseException as exc:
        future.set_exception(exc)
    else:
        future.set_result((answered, time.perf_counter() - started))


def _error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def health(cache: Any, timeout: float = HEALTH_TIMEOUT) -> dict[str, Any]:
    report = _report(cache)
    if cache._breaker.open:
        _finish(report, True, 0.0, None)
        return report
    if not cache.shared:  # in-process: nothing can hang
        started = time.perf_counter()
        try:
            answered = cache._backend.ping()
        except Exception as exc:
            _finish(report, False, 0.0, _error(exc))
        else:
            _finish(report, answered, time.perf_counter() - started, None)
        return report
    probe = cache.__dict__.get("_health_probe")
    if probe is None:
        probe = cache.__dict__.setdefault("_health_probe", _Probe())
    try:
        answered, seconds = probe.ping(cache._backend).result(timeout)
    except FutureTimeout:
        _finish(report, False, 0.0, f"no answer within {timeout * 1000:.0f} ms")
    except Exception as exc:
        _finish(report, False, 0.0, _error(exc))
    else:
        _finish(report, answered, seconds, None)
    return report


async def _aping(backend: Any) -> tuple[Any, float]:
    started = time.perf_counter()
    answered = await backend.ping()
    return answered, time.perf_counter() - started


async def ahealth(cache: Any, timeout: float = HEALTH_TIMEOUT) -> dict[str, Any]:
    report = _report(cache)
    if cache._breaker.open or not cache.shared:
        return health(cache, timeout)  # no I/O to wait for
    loop = asyncio.get_running_loop()
    task: asyncio.Task[tuple[Any, float]] | None = cache.__dict__.get("_health_task")
    if task is None or task.done() or task.get_loop() is not loop:
        try:
            backend = cache._abackend
        except Exception as exc:
            _finish(report, False, 0.0, _error(exc))
            return report
        task = cache.__dict__["_health_task"] = loop.create_task(_aping(backend))
        task.add_done_callback(_consume)
    done, _ = await asyncio.wait({task}, timeout=timeout)  # never cancels the ping
    if not done:
        _finish(report, False, 0.0, f"no answer within {timeout * 1000:.0f} ms")
    elif task.exception() is not None:
        _finish(report, False, 0.0, _error(task.exception()))  # type: ignore[arg-type]
    else:
        answered, seconds = task.result()
        _finish(report, answered, seconds, None)
    return report


def _consume(task: asyncio.Task[Any]) -> None:
    if not task.cancelled():
        task.exception()  # retrieved: no "exception was never retrieved" at exit
