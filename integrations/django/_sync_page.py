"""Django's ``cache_page`` for sync views: the request flow, over the HTTP driver.

GENERATED from ``integrations/django/_async_page.py`` by
``scripts/unasync.py`` -- do not edit; edit the async source and run the script.
The decisions and what genuinely differs between the two (when a deferred page is
settled) are in :mod:`cachekit.integrations.django.page`, which imports this at decoration.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from cachekit.http import Decided, Flights, Forward, Response

from .page import (
    _deferred_settle,
    _middleware_follows,
    _PageCache,
    _PendingPage,
    _rendered,
    _request,
    _to_django,
)

__all__ = ["_settle", "make_sync_fallback", "make_sync_page"]

logger = logging.getLogger(__name__)


def make_sync_page(page: _PageCache, view: Callable[..., Any]) -> Callable[..., Any]:
    """The view decorated: cachekit's HTTP cache over a :class:`CachekitCache`, else
    :func:`make_sync_fallback`'s."""

    def on_hit(response: Response) -> Any:
        return _to_django(response)

    def wrapper(request: Any, *args: Any, **kwargs: Any) -> Any:
        backend = page.backend()
        engine = page.engine(backend)
        if engine is None:
            return page.fallback(request, *args, **kwargs)
        http = engine.http

        def forward(step: Forward, decided: Decided) -> Any:
            request_time = time.time()
            response = _rendered(view(request, *args, **kwargs))
            if response.streaming:
                decided(None)
                return page.passthrough(step, response)
            http.invalidate_unsafe(step, response.status_code)
            pending = page.pending(request, step, response, request_time)
            if pending is None:
                decided(None)
            elif _middleware_follows(request):  # decided when Django closes the response
                _deferred_settle(engine, request, response, pending, decided)
            else:
                _settle(http, pending, decided, response)
            return response

        policy = page.policy_for(engine, backend, request)
        return http.run(_request(request), policy, on_hit, forward, deferred=True)

    return wrapper


def _settle(http: Any, pending: _PendingPage, decided: Decided, response: Any) -> None:
    """Store the pending page if ``response`` allows it, then release its flight with
    the entry stored (or None)."""
    store = None
    try:
        store = pending.decide(response)
        if store is not None:
            http.store(store)
    except Exception:  # a cache problem never fails the page
        logger.exception("storing a cache_page response failed")
        store = None
    decided(None if store is None else store.entry)


def make_sync_fallback(page: _PageCache, view: Callable[..., Any]) -> Callable[..., Any]:
    """Django's cache_page for caches that are not a CachekitCache, with an in-process
    single-flight for cold pages when ``lock`` is on: one request per page computes, the
    others wait for it, then read what it stored."""
    middleware = page.middleware
    flights = Flights()

    def wrapper(request: Any, *args: Any, **kwargs: Any) -> Any:
        response = middleware.process_request(request)
        if response is not None:
            return response
        if page.lock and getattr(request, "_cache_update_cache", False):
            key = request.build_absolute_uri()
            flight, leader = flights.join(key)
            if leader:
                try:
                    view_response = view(request, *args, **kwargs)
                    return middleware.process_response(request, _rendered(view_response))
                finally:
                    flight.finish(None)
                    flights.leave(key, flight)
            # a request of this process computes it: wait, read again
            flight.result(page.lock_timeout)
            response = middleware.process_request(request)
            if response is not None:
                return response
        view_response = view(request, *args, **kwargs)
        return middleware.process_response(request, _rendered(view_response))

    wrapper.flights = flights  # type: ignore[attr-defined]  # introspection, tests
    return wrapper
