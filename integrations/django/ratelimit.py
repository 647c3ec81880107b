"""Rate limits for Django: the ``ratelimit`` view decorator and ``RateLimitMiddleware``.

::

    from cachekit.integrations.django import ratelimit

    @ratelimit("5/minute", name="login")          # sync or async views
    def login(request): ...

    MIDDLEWARE = [..., "cachekit.integrations.django.RateLimitMiddleware"]
    CACHEKIT_RATELIMIT = {"default": "100/minute", "trusted_proxies": ["10.0.0.0/8"]}

Limits live in a cachekit cache: ``cache=`` a ``CACHES`` alias whose backend is
:class:`~cachekit.integrations.django.CachekitCache` (default ``"default"``) or a
:class:`cachekit.Cache`. ``CACHEKIT_RATELIMIT`` takes ``default`` (the middleware's rate),
``cache``, ``exempt`` (URL path prefixes the middleware skips) and the options of
:class:`~cachekit.ratelimit.http.HttpRateLimit` (``name``, ``key``, ``cost``, ``burst``,
``algorithm``, ``on_error``, ``trusted_proxies``, ``headers``, ``legacy_headers``), which
are also the defaults of every ``@ratelimit``. Views with a ``@ratelimit`` of their own are
counted by it alone. Refused: ``429`` with ``Retry-After``; answers carry the IETF
``RateLimit`` headers. Identity: ``REMOTE_ADDR`` (``X-Forwarded-For`` only from
``trusted_proxies``) or ``key(request)``; None leaves the request unlimited.
"""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable, Iterable, Mapping
from functools import wraps
from typing import Any, TypeVar

from .. import missing_extra

try:
    from asgiref.sync import iscoroutinefunction, markcoroutinefunction  # Django's own
    from django.conf import settings
    from django.core.cache import caches
    from django.http import HttpRequest, HttpResponse
except ModuleNotFoundError as exc:
    raise missing_extra(exc, "django", "django") from exc

from cachekit import Cache, ConfigurationError
from cachekit.ratelimit.http import HttpRateLimit, Verdict, checked_settings, configured_options

__all__ = ["RateLimitMiddleware", "ratelimit"]

F = TypeVar("F", bound=Callable[..., Any])
SETTING = "CACHEKIT_RATELIMIT"
_OWN = frozenset({"default", "cache", "exempt"})
_MARK = "_cachekit_rate_limited"  # on a limited view: the middleware's default skips it
_HEADERS = "_cachekit_ratelimit_headers"  # on the request: headers for the response


def _settings() -> dict[str, Any]:
    return checked_settings(getattr(settings, SETTING, None), f"settings.{SETTING}", _OWN)


def _cache(which: Any) -> Cache:
    if isinstance(which, Cache):
        return which
    backend = caches[which]
    found = getattr(backend, "cachekit", None)
    if not isinstance(found, Cache):
        raise ConfigurationError(
            f"CACHES[{which!r}] is not a cachekit backend "
            "(BACKEND: cachekit.integrations.django.CachekitCache): rate limits need one"
        )
    return found


def _make(rate: Any, cache: Any, options: Mapping[str, Any]) -> HttpRateLimit[HttpRequest]:
    configured = _settings()
    which = cache if cache is not None else configured.get("cache", "default")
    return HttpRateLimit(_cache(which), rate, **configured_options(configured, options))


def _request(request: HttpRequest) -> tuple[HttpRequest, Any, Callable[[], list[str]]]:
    """What :meth:`HttpRateLimit.check` reads of a request: it, the peer, its
    ``X-Forwarded-For``."""
    meta = request.META

    def forwarded_for() -> list[str]:
        value = meta.get("HTTP_X_FORWARDED_FOR")
        return [value] if value else []

    return request, meta.get("REMOTE_ADDR"), forwarded_for


def _refusal(verdict: Verdict) -> HttpResponse:
    status, headers, body = verdict.refusal()
    return HttpResponse(body, status=status, headers=dict(headers))


def _with_headers(response: HttpResponse, headers: Iterable[tuple[str, str]]) -> HttpResponse:
    for name, value in headers:
        response[name] = value
    return response


class _Lazy:
    """An HttpRateLimit made on first use (settings and CACHES are read then, not at
    import), once even when threads race for it."""

    def __init__(self, make: Callable[[], HttpRateLimit[HttpRequest]]) -> None:
        self._make = make
        self._limit: HttpRateLimit[HttpRequest] | None = None
        self._lock = threading.Lock()

    def get(self) -> HttpRateLimit[HttpRequest]:
        limit = self._limit
        if limit is None:
            with self._lock:
                if self._limit is None:
                    self._limit = self._make()
                limit = self._limit
        return limit


def ratelimit(rate: Any, *, cache: str | Cache | None = None, **options: Any) -> Callable[[F], F]:
    """A view decorator: ``rate`` per identity; refused requests get the 429 and the view
    does not run. Options as :class:`~cachekit.ratelimit.http.HttpRateLimit`'s (``name``
    defaults to the view's module and name); the rest from ``settings.CACHEKIT_RATELIMIT``."""
    checked_settings(options, "ratelimit()")  # an unknown option fails at decoration

    def decorate(view: F) -> F:
        name = options.get("name") or f"{view.__module__}.{view.__qualname__}"
        lazy = _Lazy(lambda: _make(rate, cache, {**options, "name": name}))

        if iscoroutinefunction(view):

            @wraps(view)
            async def limited_async(request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
                verdict = await lazy.get().acheck(*_request(request))
                if verdict.refused:
                    return _refusal(verdict)
                return _with_headers(await view(request, *args, **kwargs), verdict.headers)

            wrapper: Any = limited_async
        else:

            @wraps(view)
            def limited(request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
                verdict = lazy.get().check(*_request(request))
                if verdict.refused:
                    return _refusal(verdict)
                return _with_headers(view(request, *args, **kwargs), verdict.headers)

            wrapper = limited
        setattr(wrapper, _MARK, True)
        wrapper.limiter = lambda: lazy.get().limiter  # the view's RateLimiter (made on use)
        return wrapper  # type: ignore[no-any-return]

    return decorate


class RateLimitMiddleware:
    """``settings.CACHEKIT_RATELIMIT["default"]`` for every view without a ``@ratelimit``
    of its own (checked in ``process_view``, where the view is known); requests under an
    ``exempt`` path prefix are not counted. Sync and async."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        from django.core.exceptions import MiddlewareNotUsed

        configured = _settings()
        rate = configured.get("default")
        if rate is None:
            raise MiddlewareNotUsed(f"settings.{SETTING} has no 'default' rate")
        self.exempt = tuple(configured.get("exempt", ()) or ())
        self.limit = _Lazy(lambda: _make(rate, configured.get("cache"), {}))
        self.limit.get()  # a bad setting fails at start-up, not on the first request
        self.get_response = get_response
        self._async = iscoroutinefunction(get_response)
        if self._async:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> Any:
        if self._async:
            return self.__acall__(request)
        return _with_headers(self.get_response(request), getattr(request, _HEADERS, []))

    async def __acall__(self, request: HttpRequest) -> HttpResponse:
        get_response: Callable[[HttpRequest], Awaitable[HttpResponse]] = self.get_response
        response = await get_response(request)
        return _with_headers(response, getattr(request, _HEADERS, []))

    def process_view(
        self, request: HttpRequest, view: Callable[..., Any], args: Any, kwargs: Any
    ) -> HttpResponse | None:
        if getattr(view, _MARK, False):
            return None  # the view's own limit applies
        if self.exempt and request.path.startswith(self.exempt):
            return None
        verdict = self.limit.get().check(*_request(request))
        if verdict.refused:
            return _refusal(verdict)
        setattr(request, _HEADERS, verdict.headers)
        return None
