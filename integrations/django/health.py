"""A health view for Django: ``200`` with the health report of a cachekit cache while its
backend answers, ``503`` when it does not (see ``Cache.health``; answers within its
``timeout`` even with Redis frozen)::

    from cachekit.integrations.django.health import health_view

    urlpatterns = [
        path("healthz", health_view()),                 # CACHES["default"] (a CachekitCache)
        path("healthz/sessions", health_view("sessions")),  # another alias, or a Cache
    ]
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .. import missing_extra

try:
    from django.core.cache import caches
    from django.http import HttpRequest, HttpResponse, JsonResponse
except ModuleNotFoundError as exc:
    raise missing_extra(exc, "django", "django") from exc

from cachekit import Cache
from cachekit.exceptions import ConfigurationError

__all__ = ["health_view"]


def _cache_of(cache: Cache | str) -> Cache:
    if isinstance(cache, Cache):
        return cache
    backend = caches[cache]
    found = getattr(backend, "cachekit", None)
    if not isinstance(found, Cache):
        raise ConfigurationError(
            f"CACHES[{cache!r}] is not a cachekit.integrations.django.CachekitCache"
        )
    return found


def health_view(
    cache: Cache | str = "default", *, timeout: float = 0.025
) -> Callable[[HttpRequest], HttpResponse]:
    """A view answering the health of ``cache`` (a :class:`cachekit.Cache`, or the alias
    of a ``CachekitCache`` in ``CACHES``, looked up per request) as JSON."""

    def health(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        report = _cache_of(cache).health(timeout)
        response = JsonResponse(report, status=200 if report["ok"] else 503)
        response["Cache-Control"] = "no-store"
        return response

    return health
