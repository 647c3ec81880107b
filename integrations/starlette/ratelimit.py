"""Rate limits for Starlette and FastAPI: an ASGI middleware, a route decorator, a FastAPI
dependency. Refused requests get ``429 Too Many Requests`` with ``Retry-After``; every
answer carries the IETF ``RateLimit`` and ``RateLimit-Policy`` headers.

::

    from cachekit.integrations.starlette import RateLimitMiddleware, RateLimit, rate_limit

    app.add_middleware(RateLimitMiddleware, cache=cache, rate="100/minute")  # every request

    @app.get("/search", dependencies=[Depends(RateLimit(cache, "10/minute", name="search"))])
    async def search(q: str) -> dict: ...                                      # FastAPI

    @rate_limit(cache, "5/minute", name="login")                               # Starlette
    async def login(request): ...

The identity is the client's address (``X-Forwarded-For`` only from ``trusted_proxies``)
or ``key(request)``; a key returning None leaves the request unlimited. Decisions are
:mod:`cachekit.ratelimit`'s (one round trip on Redis; ``on_error`` while it is down).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from .. import missing_extra

try:
    from starlette.concurrency import run_in_threadpool
    from starlette.exceptions import HTTPException
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.types import ASGIApp, Message, Receive, Scope, Send
except ModuleNotFoundError as exc:
    raise missing_extra(exc, "starlette", "starlette") from exc

from cachekit import Cache
from cachekit.ratelimit import Decision
from cachekit.ratelimit.http import HttpRateLimit, Verdict

__all__ = ["RateLimit", "RateLimitMiddleware", "rate_limit"]


def _peer(scope: Scope) -> str | None:
    client = scope.get("client")
    return client[0] if client else None


def _forwarded_for(scope: Scope) -> Callable[[], Sequence[str]]:
    def read() -> list[str]:
        return [v.decode("latin-1") for k, v in scope.get("headers", ()) if k == b"x-forwarded-for"]

    return read


async def _check(limit: HttpRateLimit[Request], request: Any, scope: Scope) -> Verdict:
    return await limit.acheck(request, _peer(scope), _forwarded_for(scope))


def _refusal(verdict: Verdict) -> Response:
    status, headers, body = verdict.refusal()
    return Response(body, status, dict(headers))


def _encoded(headers: Iterable[tuple[str, str]]) -> list[tuple[bytes, bytes]]:
    return [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers]


class RateLimitMiddleware:
    """``app.add_middleware(RateLimitMiddleware, cache=cache, rate="100/minute", ...)``:
    every HTTP request (``exempt(request)`` true: not counted) limited per identity. Options
    as :class:`~cachekit.ratelimit.http.HttpRateLimit` (``name``, ``key``, ``cost``,
    ``burst``, ``algorithm``, ``on_error``, ``trusted_proxies``, ``headers``,
    ``legacy_headers``). Non-HTTP scopes (websocket, lifespan) pass through."""

    def __init__(
        self,
        app: ASGIApp,
        /,
        *,
        cache: Cache,
        rate: Any,
        exempt: Callable[[Request], bool] | None = None,
        **options: Any,
    ) -> None:
        self.app = app
        self.limit: HttpRateLimit[Request] = HttpRateLimit(cache, rate, **options)
        self.exempt = exempt

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit
        request = Request(scope) if (limit.key is not None or self.exempt is not None) else None
        if self.exempt is not None and self.exempt(request):  # type: ignore[arg-type]
            await self.app(scope, receive, send)
            return
        verdict = await _check(limit, request, scope)
        if verdict.refused:
            await _refusal(verdict)(scope, receive, send)
            return
        extra = _encoded(verdict.headers)
        if not extra:
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), *extra]}
            await send(message)

        await self.app(scope, receive, send_with_headers)


class RateLimit:
    """A FastAPI dependency: ``Depends(RateLimit(cache, "10/minute", name="search"))``.
    Refused: ``HTTPException(429)`` with the headers; admitted: the headers are set on
    the response, and the :class:`~cachekit.ratelimit.Decision` is the dependency's
    value. Options as :class:`RateLimitMiddleware`'s."""

    def __init__(self, cache: Cache, rate: Any, **options: Any) -> None:
        self.limit: HttpRateLimit[Request] = HttpRateLimit(cache, rate, **options)

    async def __call__(self, request: Request, response: Response) -> Decision | None:
        verdict = await _check(self.limit, request, request.scope)
        if verdict.refused:
            raise HTTPException(429, "Too Many Requests", headers=dict(verdict.headers))
        for name, value in verdict.headers:
            response.headers[name] = value
        return verdict.decision


def rate_limit(cache: Cache, rate: Any, **options: Any) -> Callable[[Any], Any]:
    """A decorator for Starlette endpoints (``async def endpoint(request)`` or a plain
    ``def``): refused requests get the 429, admitted ones the headers. Options as
    :class:`RateLimitMiddleware`'s."""
    limit: HttpRateLimit[Request] = HttpRateLimit(cache, rate, **options)

    def decorate(endpoint: Callable[..., Any]) -> Callable[..., Any]:
        is_async = inspect.iscoroutinefunction(endpoint)

        @functools.wraps(endpoint)
        async def limited(request: Request, *args: Any, **kwargs: Any) -> Any:
            verdict = await _check(limit, request, request.scope)
            if verdict.refused:
                return _refusal(verdict)
            if is_async:
                response = await endpoint(request, *args, **kwargs)
            else:
                response = await run_in_threadpool(endpoint, request, *args, **kwargs)
            for name, value in verdict.headers:
                response.headers[name] = value
            return response

        limited.limiter = limit.limiter  # type: ignore[attr-defined]
        return limited

    return decorate
