"""Django's ``cache_page`` on cachekit's HTTP cache (:mod:`cachekit.http`), with stampede
protection: the decisions of one decoration, the pending page decided when Django closes
the response, and Django's own ``cache_page`` as the fallback for other cache backends.

The request flow over the driver is written once, in ``_async_page.py`` (the source), and
generated into ``_sync_page.py``; both import their helpers from here.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading
import time
import weakref
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from functools import wraps
from inspect import iscoroutinefunction
from typing import TYPE_CHECKING, Any, TypeVar

from django.conf import settings
from django.core.cache import caches
from django.core.handlers.asgi import ASGIRequest
from django.http import HttpResponse
from django.middleware.cache import CacheMiddleware
from django.utils.cache import (
    get_max_age,
    has_vary_header,
    patch_response_headers,
    patch_vary_headers,
)
from django.utils.timezone import get_current_timezone_name
from django.utils.translation import get_language

from cachekit import Cache
from cachekit.http import (
    AsyncDecided,
    AsyncHttpCache,
    Decided,
    Forward,
    HttpCachePolicy,
    PagePolicyOptions,
    Request,
    Response,
    StoreDecision,
    SyncHttpCache,
    caching_headers_from,
    decided_nothing,
    make_policy,
    mark_miss,
    store_precheck,
)

from . import CachekitCache

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["cache_page"]

V = TypeVar("V", bound=Callable[..., Any])
logger = logging.getLogger(__name__)


def _request(request: Any) -> Request:
    """The :class:`cachekit.http.Request` of a Django request (headers as the server sent)."""
    meta = request.META
    headers = [(name[5:].replace("_", "-"), v) for name, v in meta.items() if name[:5] == "HTTP_"]
    return Request(
        request.method or "GET",
        request.scheme,
        request.get_host(),  # ALLOWED_HOSTS is checked, as Django's cache_page does
        request.path,
        meta.get("QUERY_STRING", ""),
        headers,
    )


def _to_django(response: Response) -> HttpResponse:
    """An HttpResponse with a stored response's status, headers and body.

    The stored headers were Django's own (validated and encoded when the page was made),
    so plain ASCII ones without CR/LF go straight into the header store; anything else
    takes Django's checks again.
    """
    result = HttpResponse(response.body, status=response.status)
    store: dict[str, tuple[str, str]] | None = getattr(result.headers, "_store", None)
    if store is not None:
        store.clear()  # also Django's default Content-Type: the page's own, or none
        for name, value in response.headers:
            text = name + value
            if not text.isascii() or "\n" in text or "\r" in text:
                break
            store[name.lower()] = (name, value)
        else:
            return result
    headers = dict(response.headers)
    result = HttpResponse(response.body, status=response.status, headers=headers)
    if not any(name.lower() == "content-type" for name in headers):
        del result.headers["Content-Type"]  # Django adds text/html; the page had none
    return result


def _rendered(response: Any) -> Any:
    render = getattr(response, "render", None)
    if callable(render) and not getattr(response, "is_rendered", True):
        response = render()  # a TemplateResponse: rendered now, so the page can be stored
    return response


def _will_set_cookie(request: Any) -> bool:
    """Whether middleware outside the view is about to set a cookie (session, CSRF)."""
    if request.META.get("CSRF_COOKIE_NEEDS_UPDATE"):
        return True
    session = getattr(request, "session", None)
    if session is None or not getattr(session, "accessed", False):
        return False
    if getattr(session, "modified", False):
        return True
    return bool(settings.SESSION_SAVE_EVERY_REQUEST) and not session.is_empty()


def _set_headers(response: Any, headers: Iterable[tuple[str, str]]) -> None:
    """Make a Django response's headers ``headers`` (cookies stay in ``response.cookies``)."""
    wanted = {
        name.lower(): (name, value) for name, value in headers if name.lower() != "set-cookie"
    }
    for name in list(response.headers):
        if name.lower() not in wanted:
            del response.headers[name]
    for name, value in wanted.values():
        response.headers[name] = value


def _all_headers(response: Any) -> list[tuple[str, str]]:
    """A Django response's header fields as they would be sent, cookies included."""
    cookies = [("Set-Cookie", morsel.OutputString()) for morsel in response.cookies.values()]
    return [*response.items(), *cookies]


def _middleware_follows(request: Any) -> bool:
    """Whether Django's handler is serving ``request``: its middleware's response phase
    runs after the view (and may set cookies, as sessions, CSRF and cookie-stored
    messages do), then the response is closed once sent. A view called directly (a
    RequestFactory request) has nothing after it. The handler resolved the URL."""
    return getattr(request, "resolver_match", None) is not None


@dataclass
class _PendingPage:
    """A miss the view made storable, to be stored only if the response Django sends
    (after every middleware's response phase) still allows it.

    The entry is the page as the view made it (Django's cache headers patched in): hits
    are returned from the view decorator, so the middleware runs on them as on a miss.
    The final response rules whether and how: one that sets any cookie (a message cookie
    as much as a session cookie), is ``private``/``no-store``/``no-cache`` or changed
    status is not stored; its Cache-Control, Expires and Vary are the entry's.
    """

    step: Forward
    page: Response
    request_time: float

    def decide(self, response: Any) -> StoreDecision | None:
        """What to store, judged on ``response`` as it is now."""
        step, final = self.step, _all_headers(response)
        if response.status_code != self.page.status or (
            store_precheck(step.request, response.status_code, final, step.policy) is not None
        ):
            return None
        said = caching_headers_from(final, self.page.headers, step.policy)
        page = dataclasses.replace(self.page, headers=said)
        return step.finish(page, time.time(), self.request_time)[1]


def _on_close(response: Any, settle: Callable[[Any], object], abandon: Callable[[], None]) -> None:
    """``settle(response)`` when Django closes ``response`` (its headers final, sent);
    ``abandon()`` instead if it is dropped unclosed (a middleware replaced it, or raised),
    so that requests waiting for this page never wait for nothing. Either runs once."""
    response._resource_closers.append(_Closer(response, settle, abandon))


class _Closer:
    """The callable :func:`_on_close` adds to the response's closers."""

    def __init__(
        self, response: Any, settle: Callable[[Any], object], abandon: Callable[[], None]
    ) -> None:
        self._finalizer = weakref.finalize(response, abandon)
        self._finalizer.atexit = False  # at exit, nobody is waiting any more
        self._response = weakref.ref(response)  # it holds us: no cycle through it
        self._settle = settle

    def __call__(self) -> None:
        response = self._response()
        if response is not None and self._finalizer.detach() is not None:
            self._settle(response)

    def __reduce__(self) -> tuple[type[_Closed], tuple[()]]:
        # A response pickled before it was sent (Django's per-site cache stores it from
        # its middleware) is decided here, not wherever the copy is unpickled.
        return _Closed, ()


class _Closed:
    def __call__(self) -> None:
        return None


_tasks: set[asyncio.Task[None]] = set()  # settled on the loop's own thread: keep a reference


def _run_on(loop: asyncio.AbstractEventLoop, make: Callable[[], Awaitable[None]]) -> None:
    """Run a coroutine on ``loop`` from ``response.close()`` or a finalizer (a worker
    thread under ASGI): waited for, unless called on the loop's own thread."""
    try:
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            task: asyncio.Task[None] = loop.create_task(make())  # type: ignore[arg-type]
            _tasks.add(task)
            task.add_done_callback(_tasks.discard)
        else:
            asyncio.run_coroutine_threadsafe(make(), loop).result(timeout=30)  # type: ignore[arg-type]
    except Exception:  # the loop is gone (its flights with it), or the store failed
        logger.exception("settling a cache_page miss failed")


@dataclass
class _Engine:
    """One decoration's HTTP cache over one cachekit Cache, and its policies per key prefix."""

    cache: Cache
    http: Any  # SyncHttpCache | AsyncHttpCache
    # async pages: stores made where no event loop is left (see _adeferred_settle)
    blocking: SyncHttpCache | None = None
    policies: dict[tuple[Any, ...], HttpCachePolicy] = field(default_factory=dict)
    # the decorator's policy with the cache's ignore_cookies / vary_cookies (Django OPTIONS)
    policy: HttpCachePolicy | None = None


class _PageCache:
    """What one ``cache_page`` decoration keeps: Django's settings for it, its HTTP policy,
    and one engine (with its own single-flight) per cachekit Cache it has run over."""

    def __init__(
        self,
        view: Callable[..., Any],
        timeout: float | None,
        cache: str | None,
        key_prefix: str | None,
        lock: bool,
        lock_ttl: float,
        lock_timeout: float,
        options: dict[str, Any],
    ) -> None:
        # Django's CacheMiddleware resolves the alias, key prefix and default timeout, and
        # serves the pages of caches that are not CachekitCache (the fallback)
        self.middleware = CacheMiddleware(
            view, page_timeout=timeout, cache_alias=cache, key_prefix=key_prefix
        )
        self.view = view
        self.page_timeout = timeout
        self.lock = lock
        self.lock_ttl = lock_ttl
        self.lock_timeout = lock_timeout
        default_ttl = options.pop("default_ttl", None)
        # validated now; default_ttl: None (Django's headers, patched in, give the lifetime)
        self.policy = make_policy(None, default_ttl, **options)
        self.is_async = iscoroutinefunction(view)
        self._engines: dict[int, _Engine] = {}
        self._engines_lock = threading.Lock()
        # generated from one source; they import this module: imported when first needed
        if self.is_async:
            from ._async_page import make_async_fallback as make_fallback
        else:
            from ._sync_page import make_sync_fallback as make_fallback
        self.fallback: Callable[..., Any] = make_fallback(self, view)

    # -- where and how ---------------------------------------------------------------------
    def backend(self) -> Any:
        return caches[self.middleware.cache_alias]

    def engine(self, backend: Any = None) -> _Engine | None:
        """The engine for the alias's current cache; None when it is not a CachekitCache."""
        backend = self.backend() if backend is None else backend
        if not isinstance(backend, CachekitCache):
            return None
        cache = backend.cachekit
        engine = self._engines.get(id(cache))
        if engine is None or engine.cache is not cache:
            with self._engines_lock:  # one engine, so one single-flight, per cache
                engine = self._engines.get(id(cache))
                if engine is None or engine.cache is not cache:
                    engine = self._engines[id(cache)] = self._new_engine(cache)
        return engine

    def _new_engine(self, cache: Cache) -> _Engine:
        # Entries are CachedResponse.to_bytes() as they are: no pickle, no signature
        raw = cache if cache.serializer is None else cache.with_options(serializer="raw")
        policy = make_policy(self.policy, defaults=cache.options)
        driver = AsyncHttpCache if self.is_async else SyncHttpCache
        http = driver(
            raw,
            policy,
            lock=self.lock,
            lock_ttl=self.lock_ttl,
            wait_timeout=self.lock_timeout,
            coalesce=self.lock,  # lock=False: no coalescing at all
        )
        blocking = SyncHttpCache(raw, policy, lock=False) if self.is_async else None
        return _Engine(cache, http, blocking, policy=policy)

    def policy_for(self, engine: _Engine, backend: Any, request: Any) -> HttpCachePolicy:
        """The policy with this request's key prefix: Django's version, the decorator's
        key_prefix, and the language and time zone when USE_I18N / USE_TZ (as Django)."""
        suffix = ""
        if settings.USE_I18N:
            suffix += "." + (getattr(request, "LANGUAGE_CODE", None) or get_language())
        if settings.USE_TZ:
            suffix += "." + get_current_timezone_name()
        index = (suffix, backend.version, backend.key_func)
        policy = engine.policies.get(index)
        if policy is None:
            name = f"cache_page.{self.middleware.key_prefix}{suffix}"
            prefix = backend.make_key(name) + ":"
            base = engine.policy or self.policy
            policy = engine.policies[index] = make_policy(base, key_prefix=prefix)
        return policy

    # -- the response ----------------------------------------------------------------------
    def patch_headers(self, request: Any, response: Any) -> None:
        """Django's cache_page headers: Expires and Cache-Control max-age (the page timeout,
        or the view's max-age, or CACHE_MIDDLEWARE_SECONDS), where Django would add them."""
        if response.streaming or response.status_code not in (200, 304):
            return
        cache_control = response.get("Cache-Control", "").lower()
        if any(d in cache_control for d in ("private", "no-cache", "no-store")):
            return
        if has_vary_header(response, "*"):
            return
        timeout = self.page_timeout
        if timeout is None:
            timeout = get_max_age(response)
            if timeout is None:
                timeout = self.middleware.cache_timeout
            elif timeout == 0:
                return
        patch_response_headers(response, timeout)
        if request.headers.get("Authorization") and "public" not in cache_control:
            patch_vary_headers(response, ("Authorization",))

    def prepare(self, request: Any, step: Forward, response: Any) -> tuple[Forward, Response]:
        """Django's headers patched in; what to hand to ``step.finish``."""
        self.patch_headers(request, response)
        session = getattr(request, "session", None)
        if session is not None and getattr(session, "accessed", False):
            patch_vary_headers(response, ("Cookie",))  # SessionMiddleware adds it later
        if step.may_store and _will_set_cookie(request):
            step = dataclasses.replace(step, may_store=False)
        return step, Response(response.status_code, _all_headers(response), response.content)

    def pending(
        self, request: Any, step: Forward, response: Any, request_time: float
    ) -> _PendingPage | None:
        """Give the view's response its miss headers; what may be stored (None: nothing)."""
        step, page = self.prepare(request, step, response)
        sent, store = step.finish(page, time.time(), request_time)
        _set_headers(response, sent.headers)
        return None if store is None else _PendingPage(step, page, request_time)

    def passthrough(self, step: Forward, response: Any) -> Any:
        """A streaming response: never buffered, never stored."""
        _set_headers(response, mark_miss(response.items(), False, step.fwd, policy=step.policy))
        return response


def cache_page(
    timeout: float | None,
    *,
    cache: str | None = None,
    key_prefix: str | None = None,
    lock: bool = True,
    lock_ttl: float = 30.0,
    lock_timeout: float = 30.0,
    **options: Unpack[PagePolicyOptions],
) -> Callable[[V], V]:
    """Django's ``cache_page`` (same arguments and headers) on cachekit's HTTP cache.

    When the ``cache`` alias (default: ``CACHE_MIDDLEWARE_ALIAS``) is a
    :class:`CachekitCache`, pages are stored by :mod:`cachekit.http` in that cache's
    namespace, one entry per page (``CachedResponse.to_bytes()``: no pickle): a hit is one
    ``GET`` (two when the page has a ``Vary``), rebuilt as an ``HttpResponse`` with its
    stored headers plus ``Age`` and ``Cache-Status``. ``If-None-Match`` /
    ``If-Modified-Since`` are answered with 304 from the entry, ``HEAD`` from the ``GET``
    entry, and the RFC 9111 rules apply: responses with ``Set-Cookie`` (or a session or
    CSRF cookie about to be set), ``private``, ``no-store``, ``no-cache`` or ``Vary: *``
    are not stored, requests with ``Authorization`` or a cookie (other than those of the
    ``ignore_cookies`` / ``vary_cookies`` options: ``cache_page`` keywords, or the
    cache's ``OPTIONS``) are not served or stored shared pages unless ``public``, a
    ``Cache-Tag`` header is stripped and becomes the entry's tags
    (``caches[alias].cachekit.invalidate_tags(...)``), a successful POST/PUT/DELETE to
    the URL drops its page. As Django does, the view's response gets ``Expires`` and
    ``Cache-Control: max-age=<timeout>`` (the smaller of it and the view's own max-age)
    which is then the entry's lifetime; ``timeout=None`` takes the view's max-age, else
    ``CACHE_MIDDLEWARE_SECONDS``. Keys: ``{KEY_PREFIX}:{VERSION}:cache_page.{key_prefix}
    .{language}.{time zone}:http:GET:{scheme}://{host}{path}?{sorted query}`` (language
    and time zone only with USE_I18N / USE_TZ). ``options``:
    :class:`cachekit.http.HttpCachePolicy` fields (``etag_from_body``, ``max_body_size``,
    ``cacheable_statuses``, ``tag_header``...). Streaming responses pass through.

    The decorator runs inside every middleware, so a page served by Django's handler is
    stored only once Django closes the response, judged on the response it sent: a
    middleware's cookie (a message cookie written or cleared by ``MessageMiddleware``, a
    session or CSRF cookie), ``private`` or ``Vary`` is seen whatever the ``MIDDLEWARE``
    order, and a response that sets any cookie is never stored. The entry is the page
    as the view made it, so the middleware runs on hits as on misses. (The miss's
    ``Cache-Status: ...; stored`` is sent before that final check: it means the view's
    page was storable.) A view called directly (no handler, no middleware) is decided on
    its own response.

    With ``lock=True`` (the default), simultaneous requests for the same cold page run the
    view once: in each process one request leads and the others wait for it in memory (no
    polling), and leaders of different processes take cachekit's lock on the page
    (``cache.lock``: Redis ``SET NX PX``, expiring after ``lock_ttl`` seconds should a
    holder die). Waiters give up after ``lock_timeout`` seconds and run the view
    themselves; so do they when the page turned out not to be storable. A TemplateResponse
    is rendered inside the lock. A failing backend never fails the page: the view answers.

    On any other cache backend this is Django's own ``cache_page`` (Django's keys and
    entries), with the in-process half of the stampede protection.
    """

    def decorator(view: V) -> V:
        page = _PageCache(
            view, timeout, cache, key_prefix, lock, lock_ttl, lock_timeout, dict(options)
        )
        if page.is_async:
            from ._async_page import make_async_page as make_page
        else:
            from ._sync_page import make_sync_page as make_page
        wrapper = make_page(page, view)
        wrapper.page_cache = page  # type: ignore[attr-defined]
        return wraps(view)(wrapper)  # type: ignore[return-value]

    return decorator


def _deferred_settle(
    engine: _Engine, request: Any, response: Any, pending: _PendingPage, decided: Decided
) -> None:
    """A sync page is decided when Django closes the response (or abandoned unclosed)."""
    from ._sync_page import _settle

    http = engine.http
    _on_close(response, lambda final: _settle(http, pending, decided, final), _abandon(decided))


async def _adeferred_settle(
    engine: _Engine, request: Any, response: Any, pending: _PendingPage, decided: AsyncDecided
) -> None:
    """An async page is decided when Django closes the response, which may happen where
    its event loop is not (or is gone)."""
    from ._async_page import _asettle
    from ._sync_page import _settle

    if isinstance(request, ASGIRequest):
        # closed from a worker thread while the server's loop runs: back to it
        loop, http = asyncio.get_running_loop(), engine.http
        _on_close(
            response,
            lambda final: _run_on(loop, lambda: _asettle(http, pending, decided, final)),
            lambda: _run_on(loop, lambda: decided(None)),
        )
        return
    # WSGI runs the view in an event loop of its own, gone when the response is closed:
    # the waiters (of this loop: none) go now, the store waits
    await decided(None)
    blocking = engine.blocking
    assert blocking is not None
    _on_close(response, lambda final: _settle(blocking, pending, decided_nothing, final), _nothing)


def _abandon(decided: Decided) -> Callable[[], None]:
    return lambda: decided(None)


def _nothing() -> None:
    return None
