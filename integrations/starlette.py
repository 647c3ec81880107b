"""HTTP response caching for Starlette and FastAPI: an ASGI middleware and a per-route decorator.

::

    from cachekit import Cache
    from cachekit.integrations.starlette import CacheMiddleware, cache_response

    cache = Cache("redis://127.0.0.1:6379/0", prefix="shop")
    app.add_middleware(CacheMiddleware, cache=cache, ttl=60)       # every GET route

    @app.get("/products/{pid}")                                   # or one route
    @cache_response(cache, ttl=60)
    async def product(pid: int) -> dict: ...

The HTTP rules (RFC 9111 as a shared cache: what is stored, for how long, Vary, 304s,
``Age`` and ``Cache-Status``) all come from :mod:`cachekit.http`; this module only
translates ASGI messages. Entries are bytes in ``cache``'s backend and namespace: a hit
is one ``GET`` on Redis. A ``Cache-Tag: a, b`` response header is removed and stored as
the entry's tags (``await middleware.ainvalidate_tags("a")``). Bodies over
``max_body_size`` and streaming responses (no ``Content-Length`` and more than one body
message) go through unbuffered and uncached. Concurrent requests for the same cold URL
run the app once. A failing backend never fails a request: the app answers.
"""

from __future__ import annotations

import functools
import inspect
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, TypeVar

from . import missing_extra

try:
    from starlette.concurrency import run_in_threadpool
    from starlette.requests import Request as StarletteRequest
    from starlette.responses import Response as StarletteResponse
except ModuleNotFoundError as exc:
    raise missing_extra(exc, "starlette", "starlette") from exc

from cachekit import Cache
from cachekit.http import (
    CachedResponse,
    Forward,
    HttpCachePolicy,
    Request,
    Response,
    invalidation_key,
    mark_miss,
    store_precheck,
)

from ._httpcache import AsyncHttpCache, decode_path, header_pairs, make_policy

__all__ = ["CacheMiddleware", "cache_response"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
F = TypeVar("F", bound=Callable[..., Any])
Decided = Callable[[CachedResponse | None], Awaitable[None]]


def request_from_scope(scope: Scope) -> Request:
    """The :class:`cachekit.http.Request` of an HTTP scope (raw path and query, as sent)."""
    raw_path = scope.get("raw_path")
    path = decode_path(raw_path) if raw_path else scope.get("root_path", "") + scope["path"]
    headers = header_pairs(scope["headers"])
    server = scope.get("server")
    host = ""
    if server and not any(name.lower() == "host" for name, _ in headers):
        host = f"{server[0]}:{server[1]}" if server[1] is not None else str(server[0])
    query = decode_path(scope.get("query_string", b""))
    return Request(scope["method"], scope.get("scheme", "http"), host, path, query, headers)


def _encode(headers: Any) -> list[tuple[bytes, bytes]]:
    return [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers]


async def _send_response(send: Send, response: Response) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": response.status,
            "headers": _encode(response.headers),
        }
    )
    await send({"type": "http.response.body", "body": response.body})


class _Engine:
    """Keeps one :class:`AsyncHttpCache` per middleware/decorator and their options."""

    def __init__(
        self,
        cache: Cache | None,
        ttl: float | None,
        policy: HttpCachePolicy | None,
        invalidate_unsafe: bool,
        lock: bool | None,
        lock_ttl: float,
        wait_timeout: float,
        options: dict[str, Any],
    ) -> None:
        self.policy = make_policy(policy, ttl, **options)
        self.http = AsyncHttpCache(
            cache if cache is not None else Cache(),
            self.policy,
            lock=lock,
            lock_ttl=lock_ttl,
            wait_timeout=wait_timeout,
        )
        self.invalidate_unsafe = invalidate_unsafe

    async def handle(self, app: ASGIApp, scope: Scope, receive: Receive, send: Send) -> None:
        req = request_from_scope(scope)

        async def on_hit(response: Response) -> None:
            await _send_response(send, response)

        async def forward(step: Forward, decided: Decided) -> None:
            await self._forward(app, step, decided, scope, receive, send)

        await self.http.arun(req, self.policy, on_hit, forward)

    async def _forward(
        self,
        app: ASGIApp,
        step: Forward,
        decided: Decided,
        scope: Scope,
        receive: Receive,
        send: Send,
    ) -> None:
        """Call the app; buffer a storable response up to the limit, else pass it on."""
        policy = self.policy
        request_time = time.time()
        start: Message | None = None
        headers: list[tuple[str, str]] = []
        chunks: list[bytes] = []
        size = 0
        buffering = False
        has_length = False
        status = 0

        async def give_up(more: bool, extra: Message | None) -> None:
            # not storing after all: send what was held back, then pass everything on
            nonlocal buffering
            buffering = False
            await decided(None)
            assert start is not None
            start["headers"] = _encode(mark_miss(headers, False, step.fwd, policy=policy))
            await send(start)
            if chunks:
                body = b"".join(chunks)
                chunks.clear()
                more = more or extra is not None
                await send({"type": "http.response.body", "body": body, "more_body": more})
            if extra is not None:
                await send(extra)

        async def capture(message: Message) -> None:
            nonlocal start, headers, size, buffering, has_length, status
            kind = message["type"]
            if kind == "http.response.start":
                status = message["status"]
                headers = header_pairs(message.get("headers", ()))
                start = dict(message)
                problem = (
                    store_precheck(step.request, status, headers, policy)
                    if step.may_store
                    else "not storable"
                )
                if problem is None:
                    buffering = True
                    has_length = any(name.lower() == "content-length" for name, _ in headers)
                    return
                await decided(None)
                start["headers"] = _encode(mark_miss(headers, False, step.fwd, policy=policy))
                await send(start)
                return
            if not buffering:
                await send(message)
                return
            if kind != "http.response.body":  # e.g. pathsend: not ours to buffer
                await give_up(True, message)
                return
            body = message.get("body", b"")
            more = bool(message.get("more_body", False))
            streaming = more and not has_length and not chunks
            if streaming or size + len(body) > policy.max_body_size:
                chunks.append(body)
                await give_up(more, None)
                return
            chunks.append(body)
            size += len(body)
            if more:
                return
            buffering = False
            resp = Response(status, headers, b"".join(chunks))
            chunks.clear()
            sent, store = step.finish(resp, time.time(), request_time)
            if store is not None:
                await self.http.astore(store)
            await decided(None if store is None else store.entry)
            await _send_response(send, sent)

        try:
            await app(scope, receive, capture)
        finally:
            await decided(None)
        if self.invalidate_unsafe and status:
            key = invalidation_key(step.request, status, policy.key_prefix)
            if key is not None:
                await self.http.adelete(key)


class _Invalidation:
    _engine: _Engine

    @property
    def http_cache(self) -> AsyncHttpCache:
        """The driver: its ``cache`` is where entries live."""
        return self._engine.http

    @property
    def policy(self) -> HttpCachePolicy:
        return self._engine.policy

    def invalidate_url(self, url: str) -> bool:
        """Drop the stored response for an absolute URL (``https://host/path?query``)."""
        return self._engine.http.invalidate_url(url)

    async def ainvalidate_url(self, url: str) -> bool:
        return await self._engine.http.ainvalidate_url(url)

    def invalidate_path(self, pattern: str, host: str | None = None) -> int:
        """Drop stored responses whose path matches ``pattern`` (``*`` matches anything,
        ``/`` and queries included; any host unless ``host`` is given); the number dropped."""
        return self._engine.http.invalidate_path(pattern, host)

    async def ainvalidate_path(self, pattern: str, host: str | None = None) -> int:
        return await self._engine.http.ainvalidate_path(pattern, host)

    def invalidate_tags(self, *tags: str) -> int:
        """Drop stored responses whose ``Cache-Tag`` named any of ``tags``."""
        return self._engine.http.invalidate_tags(*tags)

    async def ainvalidate_tags(self, *tags: str) -> int:
        return await self._engine.http.ainvalidate_tags(*tags)


class CacheMiddleware(_Invalidation):
    """Pure ASGI response cache: ``app.add_middleware(CacheMiddleware, cache=cache, ttl=60)``.

    ``cache``: a :class:`cachekit.Cache` (default: a new in-memory one). ``ttl``: seconds
    for responses that state no freshness (``Cache-Control: max-age``, ``s-maxage``,
    ``Expires`` win; None: store only those). ``policy``: an :class:`HttpCachePolicy`,
    or its fields as keywords (``cacheable_statuses``, ``max_body_size``, ``key_prefix``,
    ``etag_from_body``, ``tag_header``, ``private_ok``, ``cache_name``, ``methods``).
    ``invalidate_unsafe``: a successful POST/PUT/DELETE/... drops the URL's entry (RFC
    9111 4.4). ``lock`` / ``lock_ttl`` / ``wait_timeout``: see
    :class:`~cachekit.integrations._httpcache.HttpCache`.
    """

    def __init__(
        self,
        app: ASGIApp,
        cache: Cache | None = None,
        ttl: float | None = 60.0,
        *,
        policy: HttpCachePolicy | None = None,
        invalidate_unsafe: bool = True,
        lock: bool | None = None,
        lock_ttl: float = 30.0,
        wait_timeout: float = 10.0,
        **options: Any,
    ) -> None:
        self.app = app
        self._engine = _Engine(
            cache, ttl, policy, invalidate_unsafe, lock, lock_ttl, wait_timeout, options
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        await self._engine.handle(self.app, scope, receive, send)


# -------------------------------------------------------------- per-endpoint decorator

_REQUEST_PARAM = "cachekit_request__"


def _find_request(args: tuple[Any, ...], kwargs: dict[str, Any]) -> StarletteRequest | None:
    request = kwargs.pop(_REQUEST_PARAM, None)
    if isinstance(request, StarletteRequest):
        return request
    for value in (*args, *kwargs.values()):
        if isinstance(value, StarletteRequest):
            return value
    return None


def _with_request_param(func: Callable[..., Any]) -> inspect.Signature:
    """``func``'s signature plus a keyword-only Request for FastAPI to inject."""
    signature = inspect.signature(func)
    params = list(signature.parameters.values())
    extra = inspect.Parameter(
        _REQUEST_PARAM, inspect.Parameter.KEYWORD_ONLY, annotation=StarletteRequest
    )
    variadic = [p for p in params if p.kind is inspect.Parameter.VAR_KEYWORD]
    plain = [p for p in params if p.kind is not inspect.Parameter.VAR_KEYWORD]
    return signature.replace(parameters=[*plain, extra, *variadic])


class cache_response(_Invalidation):
    """Cache one endpoint's responses with the same HTTP rules as :class:`CacheMiddleware`.

    Starlette: ``Route("/p", cache_response(cache, ttl=60)(endpoint))``; the endpoint
    returns a Response, which is cached as it is (a ``StreamingResponse`` passes through).

    FastAPI: put it under the route decorator (``@app.get(...)`` then
    ``@cache_response(cache, ttl=60)``). FastAPI still sees the endpoint's own parameters
    (a ``Request`` is added for the decorator). Because FastAPI builds the response after
    the endpoint returns, the first call installs the cache in front of that route's ASGI
    handler and is itself served uncached; from then on the route is cached exactly like
    under the middleware (what FastAPI serialised is what is stored).

    Invalidation: ``decorator.invalidate_url(...)`` and friends, or the decorated
    function's ``.cache_response`` attribute.
    """

    def __init__(
        self,
        cache: Cache | None = None,
        ttl: float | None = 60.0,
        *,
        policy: HttpCachePolicy | None = None,
        lock: bool | None = None,
        lock_ttl: float = 30.0,
        wait_timeout: float = 10.0,
        **options: Any,
    ) -> None:
        self._engine = _Engine(cache, ttl, policy, False, lock, lock_ttl, wait_timeout, options)

    def __call__(self, func: F) -> F:
        engine = self._engine
        is_async = inspect.iscoroutinefunction(func)

        async def call(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
            if is_async:
                return await func(*args, **kwargs)
            return await run_in_threadpool(func, *args, **kwargs)

        @functools.wraps(func)
        async def endpoint(*args: Any, **kwargs: Any) -> Any:
            request = _find_request(args, kwargs)
            if request is None:  # not called as an endpoint: nothing to key on
                return await call(args, kwargs)
            route = request.scope.get("route")
            # FastAPI (its APIRoute has a dependant): cache at ASGI level. Starlette >= 1.0
            # also puts its Route in the scope, but its endpoint returns the Response.
            if route is not None and hasattr(route, "dependant") and hasattr(route, "app"):
                if not isinstance(route.app, _RouteCache):
                    route.app = _RouteCache(route.app, engine)
                return await call(args, kwargs)
            return await self._respond(request, call, args, kwargs)

        endpoint.__signature__ = _with_request_param(func)  # type: ignore[attr-defined]
        endpoint.cache_response = self  # type: ignore[attr-defined]
        return endpoint  # type: ignore[return-value]

    async def _respond(
        self,
        request: StarletteRequest,
        call: Callable[[tuple[Any, ...], dict[str, Any]], Awaitable[Any]],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        engine = self._engine
        policy = engine.policy
        req = request_from_scope(request.scope)

        async def on_hit(response: Response) -> Any:
            result = StarletteResponse(response.body, status_code=response.status)
            result.raw_headers = _encode(response.headers)
            return result

        async def forward(step: Forward, decided: Decided) -> Any:
            request_time = time.time()
            try:
                result = await call(args, kwargs)
            except BaseException:
                await decided(None)
                raise
            if not isinstance(result, StarletteResponse) or not hasattr(result, "body"):
                await decided(None)  # streaming, or not a response at all
                if isinstance(result, StarletteResponse):
                    pairs = mark_miss(
                        header_pairs(result.raw_headers), False, step.fwd, policy=policy
                    )
                    result.raw_headers = _encode(pairs)
                return result
            body = bytes(result.body)
            resp = Response(result.status_code, header_pairs(result.raw_headers), body)
            sent, store = step.finish(resp, time.time(), request_time)
            if store is not None:
                await engine.http.astore(store)
            await decided(None if store is None else store.entry)
            result.raw_headers = _encode(sent.headers)
            return result

        return await engine.http.arun(req, policy, on_hit, forward)


class _RouteCache:
    """In front of one FastAPI route's ASGI handler (installed by :class:`cache_response`)."""

    def __init__(self, app: ASGIApp, engine: _Engine) -> None:
        self.app = app
        self._engine = engine

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        await self._engine.handle(self.app, scope, receive, send)
