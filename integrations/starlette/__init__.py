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
import typing
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any, TypeVar

from .. import missing_extra

try:
    from starlette.concurrency import run_in_threadpool
    from starlette.requests import Request as StarletteRequest
    from starlette.responses import Response as StarletteResponse
    from starlette.types import ASGIApp, Message, Receive, Scope, Send
except ModuleNotFoundError as exc:
    raise missing_extra(exc, "starlette", "starlette") from exc

from cachekit import Cache
from cachekit.http import (
    AsyncHttpCache,
    CachedResponse,
    Forward,
    Handoff,
    HttpCachePolicy,
    Identity,
    Request,
    Response,
    SyncHttpCache,
    apply_identity,
    decode_path,
    header_pairs,
    make_policy,
    mark_miss,
    split_options,
    store_precheck,
)

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from cachekit.http import HttpCacheOptions

__all__ = ["CacheMiddleware", "cache_response"]

F = TypeVar("F", bound=Callable[..., Any])
Decided = Callable[[CachedResponse | None], Awaitable[None]]

HANDOFF = "cachekit.handoff"  # scope key: the Handoff of the cache layer around this one
_FORWARDED = "cachekit.forwarded"  # scope key: the _Engine that called the app
# What Starlette's SessionMiddleware and AuthenticationMiddleware put in the scope.
_IDENTITY_KEYS = frozenset({"session", "user", "auth"})


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


def _encode(headers: Iterable[tuple[str, str]]) -> list[tuple[bytes, bytes]]:
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


def _peek(scope: Scope, key: str) -> Any:
    """``scope.get(key)``, not counted as the app's read when ``scope`` is watched."""
    return dict.get(scope, key) if isinstance(scope, dict) else scope.get(key)


class _WatchedScope(dict[str, Any]):
    """The scope an app is called with on a miss: records whether it reads the session or
    the user (``request.session``, ``request.user``, ``request.auth`` read the scope).

    A copy, because a plain dict cannot report reads; writes go to the original as well,
    so middleware around the cache still sees what the app sets in its scope.
    """

    def __init__(self, origin: Scope) -> None:
        super().__init__(origin)
        self.origin = origin
        self.read: set[str] = set()
        # a session that is already there (else middleware inside the cache makes it)
        self.had_session = bool(_peek(origin, "session"))

    def __getitem__(self, key: str) -> Any:
        if key in _IDENTITY_KEYS:
            self.read.add(key)
        return super().__getitem__(key)

    def get(self, key: str, default: Any = None) -> Any:
        if key in _IDENTITY_KEYS:
            self.read.add(key)
        return super().get(key, default)

    def __setitem__(self, key: str, value: Any) -> None:
        super().__setitem__(key, value)
        self.origin[key] = value

    def __delitem__(self, key: str) -> None:
        super().__delitem__(key)
        self.origin.pop(key, None)

    def update(self, *args: Any, **kwargs: Any) -> None:
        changes = dict(*args, **kwargs)
        super().update(changes)
        self.origin.update(changes)

    def __ior__(self, other: Any) -> _WatchedScope:  # type: ignore[override,misc]
        self.update(other)
        return self

    def setdefault(self, key: str, default: Any = None) -> Any:
        if key not in self:
            self[key] = default
        return self[key]

    def pop(self, key: str, *default: Any) -> Any:
        self.origin.pop(key, None)
        return super().pop(key, *default)

    def identity(self) -> Identity | None:
        """What the app read that tells requesters apart (see cachekit.http.Identity)."""
        if not self.read:
            return None
        vary: list[str] = []
        carried = False
        if "session" in self.read:
            vary.append("Cookie")
            # had one, or has one now: SessionMiddleware will set or clear the cookie
            carried = self.had_session or bool(_peek(self, "session"))
        if self.read & {"user", "auth"}:
            vary += ["Cookie", "Authorization"]
            user, auth = _peek(self, "user"), _peek(self, "auth")
            carried = carried or bool(getattr(user, "is_authenticated", False))
            carried = carried or bool(getattr(auth, "scopes", None))
        return Identity(tuple(dict.fromkeys(vary)), carried)


class _Capture:
    """The ``send`` an app is called with on a miss: buffers a storable response up to
    the body limit and stores it; anything else goes on unbuffered."""

    def __init__(
        self, engine: _Engine, step: Forward, decided: Decided, send: Send, scope: _WatchedScope
    ) -> None:
        self.engine, self.step, self.decided, self.send, self.scope = (
            engine, step, decided, send, scope
        )  # fmt: skip
        self.handoff: Handoff = scope[HANDOFF]
        self.request_time = time.time()
        self.status = 0
        self.start: Message | None = None  # held back while buffering
        self.headers: list[tuple[str, str]] = []
        self.chunks: list[bytes] = []
        self.size = 0
        self.buffering = False
        self.has_length = False

    async def __call__(self, message: Message) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            await self._start(message)
        elif not self.buffering:
            await self.send(message)
        elif kind != "http.response.body":  # e.g. pathsend: not ours to buffer
            await self._give_up(True, message)
        else:
            await self._body(message)

    async def _start(self, message: Message) -> None:
        self.status = message["status"]
        if self.handoff.claimed:  # a cache layer inside answered: its response as it is
            await self.send(message)
            return
        step, policy = self.step, self.engine.policy
        headers, problem = apply_identity(
            header_pairs(message.get("headers", ())), self.scope.identity()
        )
        self.headers, self.start = headers, dict(message)
        if problem is None:
            problem = (
                store_precheck(step.request, self.status, headers, policy)
                if step.may_store
                else "not storable"
            )
        if problem is None:
            self.buffering = True
            self.has_length = any(name.lower() == "content-length" for name, _ in headers)
            return
        await self.decided(None)
        self.start["headers"] = _encode(mark_miss(headers, False, step.fwd, policy=policy))
        await self.send(self.start)

    async def _give_up(self, more: bool, extra: Message | None) -> None:
        # not storing after all: send what was held back, then pass everything on
        self.buffering = False
        await self.decided(None)
        assert self.start is not None
        self.start["headers"] = _encode(
            mark_miss(self.headers, False, self.step.fwd, policy=self.engine.policy)
        )
        await self.send(self.start)
        if self.chunks:
            body = b"".join(self.chunks)
            self.chunks.clear()
            more = more or extra is not None
            await self.send({"type": "http.response.body", "body": body, "more_body": more})
        if extra is not None:
            await self.send(extra)

    async def _body(self, message: Message) -> None:
        body = message.get("body", b"")
        more = bool(message.get("more_body", False))
        self.chunks.append(body)
        streaming = more and not self.has_length and len(self.chunks) == 1
        if streaming or self.size + len(body) > self.engine.policy.max_body_size:
            await self._give_up(more, None)
            return
        self.size += len(body)
        if more:
            return
        self.buffering = False
        resp = Response(self.status, self.headers, b"".join(self.chunks))
        self.chunks.clear()
        sent, store = self.step.finish(resp, time.time(), self.request_time)
        await self.engine.http.asettle(store, self.decided)
        await _send_response(self.send, sent)


class _Engine:
    """Keeps one :class:`AsyncHttpCache` per middleware/decorator and their options."""

    def __init__(
        self,
        cache: Cache | None,
        ttl: float | None,
        policy: HttpCachePolicy | None,
        invalidate_unsafe: bool,
        options: HttpCacheOptions,
    ) -> None:
        cache = cache if cache is not None else Cache()
        fields, coalescing = split_options(options)
        # ignore_cookies / vary_cookies: the cache's options unless given here
        self.policy = make_policy(policy, ttl, defaults=cache.options, **fields)
        # invalidation for sync callers (the async driver's methods are coroutines)
        self.blocking = SyncHttpCache(cache, self.policy, coalesce=False)
        self.http = AsyncHttpCache(cache, self.policy, **coalescing)
        self.invalidate_unsafe = invalidate_unsafe

    async def handle(self, app: ASGIApp, scope: Scope, receive: Receive, send: Send) -> None:
        req = request_from_scope(scope)
        handoff = scope.get(HANDOFF)  # a cache layer around this one: answer in its stead
        joined = handoff.claim() if isinstance(handoff, Handoff) else None

        async def on_hit(response: Response) -> None:
            await _send_response(send, response)

        async def forward(step: Forward, decided: Decided) -> None:
            await self._forward(app, step, decided, scope, receive, send)

        await self.http.arun(req, self.policy, on_hit, forward, joined=joined)

    async def _forward(
        self,
        app: ASGIApp,
        step: Forward,
        decided: Decided,
        scope: Scope,
        receive: Receive,
        send: Send,
    ) -> None:
        """Call the app (offering our flight to a cache layer inside it), then store."""
        watched = _WatchedScope(scope)
        # ours, for the layers inside: not written through to the scope we were given
        dict.__setitem__(watched, HANDOFF, Handoff(decided))
        dict.__setitem__(watched, _FORWARDED, self)
        capture = _Capture(self, step, decided, send, watched)
        try:
            await app(watched, receive, capture)
        finally:
            await decided(None)
        if self.invalidate_unsafe and capture.status:
            await self.http.ainvalidate_unsafe(step, capture.status)


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
        return self._engine.blocking.invalidate_url(url)

    async def ainvalidate_url(self, url: str) -> bool:
        return await self._engine.http.ainvalidate_url(url)

    def invalidate_path(self, pattern: str, host: str | None = None) -> int:
        """Drop stored responses whose path matches ``pattern`` (``*`` matches anything,
        ``/`` and queries included; any host unless ``host`` is given); the number dropped."""
        return self._engine.blocking.invalidate_path(pattern, host)

    async def ainvalidate_path(self, pattern: str, host: str | None = None) -> int:
        return await self._engine.http.ainvalidate_path(pattern, host)

    def invalidate_tags(self, *tags: str) -> int:
        """Drop stored responses whose ``Cache-Tag`` named any of ``tags``."""
        return self._engine.blocking.invalidate_tags(*tags)

    async def ainvalidate_tags(self, *tags: str) -> int:
        return await self._engine.http.ainvalidate_tags(*tags)


class CacheMiddleware(_Invalidation):
    """Pure ASGI response cache: ``app.add_middleware(CacheMiddleware, cache=cache, ttl=60)``.

    ``cache``: a :class:`cachekit.Cache` (default: a new in-memory one). ``ttl``: seconds
    for responses that state no freshness (``Cache-Control: max-age``, ``s-maxage``,
    ``Expires`` win; None: store only those). ``policy``: an :class:`HttpCachePolicy`,
    or its fields as keywords (``cacheable_statuses``, ``max_body_size``, ``key_prefix``,
    ``etag_from_body``, ``tag_header``, ``private_ok``, ``cache_name``, ``methods``,
    ``ignore_cookies``, ``vary_cookies``: default, the cache's options of those names).
    ``invalidate_unsafe``: a successful POST/PUT/DELETE/... drops the URL's entry (RFC
    9111 4.4). ``lock`` / ``lock_ttl`` / ``wait_timeout`` / ``coalesce``: see
    :class:`~cachekit.http.HttpCache` (their defaults). The keywords are typed once:
    :class:`~cachekit.http.HttpCacheOptions`.
    """

    def __init__(
        self,
        app: ASGIApp,
        /,
        cache: Cache | None = None,
        ttl: float | None = 60.0,
        *,
        policy: HttpCachePolicy | None = None,
        invalidate_unsafe: bool = True,
        **options: Unpack[HttpCacheOptions],
    ) -> None:
        self.app = app
        self._engine = _Engine(cache, ttl, policy, invalidate_unsafe, options)

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


def _takes_request(func: Callable[..., Any]) -> bool:
    try:
        hints = typing.get_type_hints(func)
    except Exception:  # an unresolvable annotation: FastAPI will say so itself
        return False
    return any(isinstance(h, type) and issubclass(h, StarletteRequest) for h in hints.values())


def _with_request_param(func: Callable[..., Any]) -> inspect.Signature:
    """``func``'s signature plus a keyword-only Request for FastAPI to inject, unless it
    takes one already (FastAPI injects the request into one parameter only)."""
    signature = inspect.signature(func)
    if _takes_request(func):
        return signature
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
    (a ``Request`` is added for the decorator). FastAPI builds the response after the
    endpoint returns, so the cache sits in front of the route's ASGI handler: the first
    call installs it there and sends its own request through it (stored like any other;
    the route's dependencies are resolved a second time for that one request). From
    then on a hit is answered before dependencies run, and what FastAPI serialised is
    what is stored.

    Under :class:`CacheMiddleware` (or another ``cache_response``), the innermost layer
    answers with its own options and the outer one steps aside for that request: one
    flight, one store, one ``Cache-Status``.

    Invalidation: ``decorator.invalidate_url(...)`` and friends, or the decorated
    function's ``.cache_response`` attribute.
    """

    def __init__(
        self,
        cache: Cache | None = None,
        ttl: float | None = 60.0,
        *,
        policy: HttpCachePolicy | None = None,
        **options: Unpack[HttpCacheOptions],
    ) -> None:
        self._engine = _Engine(cache, ttl, policy, False, options)

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
            if route is None or not hasattr(route, "dependant"):
                return await self._respond(request, call, args, kwargs)
            if request.scope.get(_FORWARDED) is engine:  # through our _RouteCache
                return await call(args, kwargs)
            target = _route_target(request.scope, route)
            if target is None:  # a FastAPI we do not know how to get in front of
                return await call(args, kwargs)
            return _Reentry(_install(target, engine))

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
        handoff = request.scope.get(HANDOFF)  # under CacheMiddleware: answer in its stead
        joined = handoff.claim() if isinstance(handoff, Handoff) else None

        async def on_hit(response: Response) -> Any:
            result = StarletteResponse(response.body, status_code=response.status)
            result.raw_headers = _encode(response.headers)
            return result

        async def forward(step: Forward, decided: Decided) -> Any:
            request_time = time.time()
            origin = request.scope
            request.scope = watched = _WatchedScope(origin)  # the endpoint reads it
            try:
                result = await call(args, kwargs)
            except BaseException:
                await decided(None)
                raise
            finally:
                request.scope = origin
            identity = watched.identity()
            if not isinstance(result, StarletteResponse) or not hasattr(result, "body"):
                await decided(None)  # streaming, or not a response at all
                if isinstance(result, StarletteResponse):
                    pairs, _ = apply_identity(header_pairs(result.raw_headers), identity)
                    pairs = mark_miss(pairs, False, step.fwd, policy=policy)
                    result.raw_headers = _encode(pairs)
                return result
            body = bytes(result.body)
            resp = Response(result.status_code, header_pairs(result.raw_headers), body)
            sent, store = step.finish(resp, time.time(), request_time, identity)
            await engine.http.asettle(store, decided)
            result.raw_headers = _encode(sent.headers)
            return result

        return await engine.http.arun(req, policy, on_hit, forward, joined=joined)


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


def _route_target(scope: Scope, route: Any) -> Any:
    """The object whose ``app`` FastAPI calls for this request: the route, or for a route
    of an included router, FastAPI's per-inclusion context (FastAPI >= 0.16x)."""
    fastapi_scope = scope.get("fastapi")
    context = (
        fastapi_scope.get("effective_route_context") if isinstance(fastapi_scope, dict) else None
    )
    if getattr(context, "original_route", None) is route and getattr(context, "app", None):
        return context
    return route if getattr(route, "app", None) is not None else None


def _install(target: Any, engine: _Engine) -> _RouteCache:
    installed = target.app
    if not (isinstance(installed, _RouteCache) and installed._engine is engine):
        installed = target.app = _RouteCache(target.app, engine)
    return installed


class _Reentry(StarletteResponse):
    """What a FastAPI endpoint returns when its request did not come through its cache
    (the first requests after start-up): FastAPI sends "this response" by calling it,
    and it sends the request through the route's cache instead."""

    def __init__(self, app: ASGIApp) -> None:
        super().__init__()
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # a copy: the handler runs again under it and sets FastAPI's keys of its own
        await self._app(dict(scope), receive, send)


# rate limits (429, RateLimit headers): in their own module, re-exported here
from .ratelimit import *  # noqa: E402, F403  (RateLimitMiddleware, RateLimit, rate_limit)

# server-side sessions (request.session in the cache's backend): their own module
from .sessions import SessionMiddleware as SessionMiddleware  # noqa: E402
