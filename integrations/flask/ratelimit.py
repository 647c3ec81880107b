"""Rate limits for Flask: a view decorator and an app-wide default.

::

    fcache = FlaskCache(app)

    @app.post("/login")
    @fcache.rate_limit("5/minute", name="login")
    def login(): ...

    app.config["CACHEKIT_RATELIMIT"] = {"default": "100/minute",   # every other view
                                        "trusted_proxies": ["10.0.0.0/8"]}

``CACHEKIT_RATELIMIT`` (read by ``init_app``) takes ``default`` (a rate for every view
without a limit of its own), ``exempt`` (endpoint names the default skips), and the
options of :class:`~cachekit.ratelimit.http.HttpRateLimit` (``name``, ``key``, ``cost``,
``burst``, ``algorithm``, ``on_error``, ``trusted_proxies``, ``headers``,
``legacy_headers``), which are also the defaults of every ``fcache.rate_limit``. Refused
requests get ``429`` with ``Retry-After``; answers carry the IETF ``RateLimit`` headers.
The identity is ``request.remote_addr`` (``X-Forwarded-For`` only from
``trusted_proxies``), or ``key(request)``; None leaves the request unlimited.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from .. import missing_extra

try:
    from flask import Flask, after_this_request, current_app, request
    from flask.wrappers import Response
except ModuleNotFoundError as exc:
    raise missing_extra(exc, "flask", "flask") from exc

from cachekit.ratelimit.http import HttpRateLimit, checked_settings, configured_options

if TYPE_CHECKING:
    from . import FlaskCache

__all__ = ["init_rate_limits", "view_rate_limit"]

F = TypeVar("F", bound=Callable[..., Any])
CONFIG = "CACHEKIT_RATELIMIT"
_EXTENSION = "cachekit.ratelimit"  # app.extensions: {id(decorator) or "default": limit}
_MARK = "_cachekit_rate_limited"  # on a limited view: the app-wide default skips it
_OWN = frozenset({"default", "exempt"})


def _settings(app: Flask) -> dict[str, Any]:
    return checked_settings(app.config.get(CONFIG), f"app.config[{CONFIG!r}]", _OWN)


def _limits(app: Flask) -> dict[Any, HttpRateLimit[Any]]:
    found: dict[Any, HttpRateLimit[Any]] = app.extensions.setdefault(_EXTENSION, {})
    return found


def _admit(limit: HttpRateLimit[Any]) -> Response | None:
    """The request counted: the 429 to answer, or None (the headers go on the view's
    response)."""
    verdict = limit.check(
        request, request.remote_addr, lambda: request.headers.getlist("X-Forwarded-For")
    )
    if verdict.refused:
        status, headers, body = verdict.refusal()
        response: Response = current_app.response_class(body, status, headers)
        return response
    if verdict.headers:

        @after_this_request
        def add(response: Response) -> Response:
            for name, value in verdict.headers:
                response.headers[name] = value
            return response

    return None


def view_rate_limit(fcache: FlaskCache, rate: Any, **options: Any) -> Callable[[F], F]:
    """``fcache.rate_limit(rate, **options)``: a view decorator (sync or async views).
    Options as :class:`~cachekit.ratelimit.http.HttpRateLimit`'s; those not given come
    from ``app.config["CACHEKIT_RATELIMIT"]``. Each app gets its own limiter, in its
    cache, made on the first request."""
    checked_settings(options, "rate_limit()")  # an unknown option fails at decoration

    def decorate(view: F) -> F:
        token = object()  # this decorator's limit, per app

        def limit_here() -> HttpRateLimit[Any]:
            limits = _limits(current_app)
            limit = limits.get(token)
            if limit is None:
                settings = configured_options(_settings(current_app), {})
                settings.setdefault("name", getattr(view, "__name__", "view"))
                limit = limits[token] = HttpRateLimit(fcache.cache, rate, **{**settings, **options})
            return limit

        if inspect.iscoroutinefunction(view):

            @functools.wraps(view)
            async def limited_async(*args: Any, **kwargs: Any) -> Any:
                refused = _admit(limit_here())
                return refused if refused is not None else await view(*args, **kwargs)

            wrapper: Any = limited_async
        else:

            @functools.wraps(view)
            def limited(*args: Any, **kwargs: Any) -> Any:
                refused = _admit(limit_here())
                return refused if refused is not None else view(*args, **kwargs)

            wrapper = limited
        setattr(wrapper, _MARK, True)
        return wrapper  # type: ignore[no-any-return]

    return decorate


def init_rate_limits(app: Flask, fcache: FlaskCache) -> None:
    """Called by ``FlaskCache.init_app``: checks ``CACHEKIT_RATELIMIT`` and, with a
    ``default`` rate, limits every request whose view has no limit of its own."""
    settings = _settings(app)
    default = settings.pop("default", None)
    exempt = frozenset(settings.pop("exempt", ()) or ())
    if default is None:
        return
    limit: HttpRateLimit[Any] = HttpRateLimit(fcache._state(app).cache, default, **settings)
    _limits(app)["default"] = limit

    def check() -> Response | None:
        endpoint = request.endpoint
        if endpoint is None or endpoint in exempt:
            return None
        if getattr(app.view_functions.get(endpoint), _MARK, False):
            return None  # the view's own limit applies
        return _admit(limit)

    app.before_request(check)
