"""Django ``CACHES`` backend over cachekit, and a stampede-safe ``cache_page``.

    CACHES = {
        "default": {
            "BACKEND": "cachekit.integrations.django.CachekitCache",
            "LOCATION": "redis://127.0.0.1:6379/0",      # any cachekit URL; memory:// too
            "TIMEOUT": 300,
            "KEY_PREFIX": "shop",
            "OPTIONS": {"timeout": 0.25, "on_error": "ignore"},
        }
    }

Keys. Django's key function and cachekit's namespace are combined so that nothing is
namespaced twice: the cachekit namespace is ``"!django:{KEY_PREFIX}:"`` (``"django"`` when
KEY_PREFIX is empty, ``OPTIONS["prefix"]`` if given) with no cachekit version segment,
and Django's part is ``"{version}:{key}"``. So with the default key function the Redis key
is what Django's own ``default_key_func`` would make behind the ``!django:`` marker
(``!django:shop:1:answer``). The marker keeps Django's entries apart from a plain
``Cache(prefix="shop")`` on the same Redis (a plain prefix cannot start with ``!``):
neither reads nor clears the other's. A custom ``KEY_FUNCTION``'s output is stored under
the namespace as it is. ``clear()`` removes the whole namespace (every Django version and
custom key of this prefix, by SCAN, never FLUSHDB), so another application, or another
KEY_PREFIX, in the same Redis database keeps its data.

Values. Django pickles cached values and its apps cache model instances, querysets,
responses and arbitrary classes, which JSON cannot encode. The default serializer is
therefore pickle, signed with HMAC-SHA256 under a key derived from ``SECRET_KEY``: an entry
written by anyone who does not know the secret (or tampered with) is refused before
``pickle.loads`` sees it, so write access to Redis does not become code execution in the
web processes. ``OPTIONS["serializer"]`` (``"orjson"``, ``"msgpack"``, an object with
dumps/loads, ...) and ``OPTIONS["secret"]`` override it. Rotating SECRET_KEY makes old
entries unreadable, which is a miss, not an error.

Sharing. Django makes one backend instance per thread (and per async context); they all
share one cachekit :class:`~cachekit.Cache` (so one connection pool, one circuit breaker,
one set of statistics) per distinct configuration, from a module-level registry.
``close()``, which Django calls at the end of every request, therefore leaves the pool
open; :func:`close_shared_caches` closes everything (process shutdown, tests).

Errors. A failing backend is a miss and a dropped write (cachekit's fail-open policy), so
a Redis outage slows pages down instead of failing them; ``OPTIONS["on_error"] =
"raise"`` raises :class:`~cachekit.BackendError` instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import logging
import pickle
import re
import threading
import time
import weakref
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import wraps
from inspect import iscoroutinefunction
from typing import Any, TypeVar

from .. import missing_extra

try:
    from django.conf import settings
    from django.core.cache import caches
    from django.core.cache.backends.base import (
        DEFAULT_TIMEOUT,
        MEMCACHE_MAX_KEY_LENGTH,
        BaseCache,
        default_key_func,
    )
    from django.core.exceptions import ImproperlyConfigured
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
except ModuleNotFoundError as exc:
    raise missing_extra(exc, "django", "django") from exc

from cachekit import Cache, ConfigurationError, IncrementError, SerializationError
from cachekit.http import (
    AsyncDecided,
    AsyncHttpCache,
    Decided,
    Forward,
    HttpCachePolicy,
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

__all__ = [
    "CachekitCache",
    "InvalidCacheOptionsError",
    "NotAnIntegerError",
    "UnencodableValueError",
    "cache_page",
    "close_shared_caches",
]

V = TypeVar("V", bound=Callable[..., Any])
logger = logging.getLogger(__name__)
_T = TypeVar("_T")

# OPTIONS: cachekit's options table (Cache.check_options), less the two Django sets itself
# (VERSION is in every key, TIMEOUT is the default timeout), plus Django's own below
_DJANGO_SETS = {"version": "VERSION", "default_ttl": "TIMEOUT"}
# Django's own OPTIONS: MAX_ENTRIES bounds a memory:// cache; culling is LRU eviction, so
# CULL_FREQUENCY has nothing to tune
_DJANGO_OPTIONS = frozenset({"MAX_ENTRIES", "CULL_FREQUENCY"})
_SECRET_SALT = b"cachekit.integrations.django.CachekitCache"
_memcached_unsafe = re.compile(r"[\x00-\x20\x7f]").search  # as Django's validate_key


class UnencodableValueError(SerializationError, pickle.PicklingError):
    """A value the serializer cannot encode (nothing was stored).

    Also a :class:`pickle.PicklingError`, which is what Django code expects a cache to
    raise for an unpicklable value."""


class NotAnIntegerError(IncrementError, TypeError):
    """``incr()``/``decr()`` of an entry that is not an integer (TypeError, as in Django)."""


# -- one cachekit Cache per configuration, shared by Django's per-thread instances ----------
_shared: dict[tuple[Any, ...], Cache] = {}
_shared_lock = threading.Lock()


def _hashable(value: Any) -> Any:
    try:
        hash(value)
    except TypeError:
        return ("unhashable", type(value).__qualname__, repr(value))
    return value


def _shared_cache(location: str, options: Mapping[str, Any]) -> Cache:
    key = (location, tuple(sorted((name, _hashable(v)) for name, v in options.items())))
    cache = _shared.get(key)
    if cache is None:
        with _shared_lock:  # two threads' first requests must not build two pools
            cache = _shared.get(key)
            if cache is None:
                cache = _shared[key] = _checked(
                    Cache.from_settings,
                    options,
                    location,
                    where="Django OPTIONS",
                    also=sorted(_DJANGO_OPTIONS),
                    # Django's version is in every key: an unversioned namespace, marked as
                    # Django's ("!django:{KEY_PREFIX}:"), which no plain cachekit prefix
                    # can produce, so neither reads nor clears the other's entries
                    version="",
                    owner="django",
                )
    return cache


class InvalidCacheOptionsError(ConfigurationError, ImproperlyConfigured):  # type: ignore[misc]
    """Bad ``OPTIONS`` or ``LOCATION``: a cachekit ConfigurationError, and the
    ImproperlyConfigured Django code expects."""


def _checked(make: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
    try:
        return make(*args, **kwargs)
    except ConfigurationError as exc:
        raise InvalidCacheOptionsError(f"CachekitCache: {exc}") from exc


def close_shared_caches() -> None:
    """Close and forget every shared cachekit cache (process shutdown, test teardown).

    Async clients are closed by the event loops they belong to; this closes the sync side.
    """
    with _shared_lock:
        shared = list(_shared.values())
        _shared.clear()
    for cache in shared:
        cache.close()


def _derived_secret() -> bytes:
    secret_key = settings.SECRET_KEY  # Django raises ImproperlyConfigured when it is empty
    return hashlib.sha256(_SECRET_SALT + b":" + str(secret_key).encode()).digest()


def _cachekit_options(params: Mapping[str, Any]) -> dict[str, Any]:
    given = dict(params.get("OPTIONS") or {})
    for name, setting in _DJANGO_SETS.items():
        if name in given:
            raise InvalidCacheOptionsError(
                f"CachekitCache: OPTIONS[{name!r}] is set by Django's {setting} setting"
            )
    options = {name: value for name, value in given.items() if name not in _DJANGO_OPTIONS}
    options = _checked(
        Cache.check_options, options, where="Django OPTIONS", also=sorted(_DJANGO_OPTIONS)
    )
    if "MAX_ENTRIES" in given and "max_entries" not in options:
        options["max_entries"] = given["MAX_ENTRIES"]  # checked (and text converted) below
    options["prefix"] = options.get("prefix") or params.get("KEY_PREFIX") or "django"
    options.setdefault("serializer", "pickle")
    if options["serializer"] == "pickle" and not options.get("secret"):
        options["secret"] = _derived_secret()
    return options


class CachekitCache(BaseCache):  # type: ignore[misc]  # django ships no type hints
    """A Django cache backend; ``LOCATION`` is a cachekit URL, ``OPTIONS`` cachekit options.

    Accepted OPTIONS: cachekit's options (the README's table: ``prefix``, ``serializer``,
    ``secret``, ``compress``, ``timeout``, ``on_error``, ``max_entries``, ...; values as
    Python objects or text) except ``version`` and ``default_ttl`` (Django's VERSION and
    TIMEOUT), and Django's ``MAX_ENTRIES`` (memory) and ``CULL_FREQUENCY`` (ignored:
    eviction is LRU). Anything else is an :class:`InvalidCacheOptionsError`.
    """

    def __init__(self, location: str | None, params: dict[str, Any]) -> None:
        super().__init__(params)
        if location is not None and not isinstance(location, str):
            raise ImproperlyConfigured(
                "CachekitCache: LOCATION is one cachekit URL (redis://..., memory://, ...)"
            )
        self._location = location or "memory://"
        self._options = _cachekit_options(params)
        self._cache = _shared_cache(self._location, self._options)

    @property
    def cachekit(self) -> Cache:
        """The shared :class:`cachekit.Cache` behind this backend (locks, stats, tags...)."""
        return self._cache

    # -- keys and timeouts ----------------------------------------------------------------
    def make_key(self, key: Any, version: int | None = None) -> str:
        """Django's part of the key; the cachekit namespace (``KEY_PREFIX:``) is added below.

        With the default key function this is ``"{version}:{key}"``, so the stored key is
        what Django's ``default_key_func`` makes; a custom KEY_FUNCTION gets the usual
        ``(key, key_prefix, version)`` and its result is used as it is.
        """
        if version is None:
            version = self.version
        if self.key_func is default_key_func:
            return f"{version}:{key}"
        made: str = self.key_func(key, self.key_prefix, version)
        return made

    def validate_key(self, key: str) -> None:
        """Django's warning about keys memcached would refuse, on the fast path only when
        needed (Django's lazily compiled regex costs a proxy lookup on every call)."""
        if len(key) > MEMCACHE_MAX_KEY_LENGTH or _memcached_unsafe(key):
            super().validate_key(key)

    def get_backend_timeout(self, timeout: Any = DEFAULT_TIMEOUT) -> float | None:
        """Seconds to keep an entry: None forever, 0 not at all (Django's rules)."""
        if timeout is DEFAULT_TIMEOUT:
            timeout = self.default_timeout
        if timeout is None:
            return None
        return timeout if timeout > 0 else 0

    # -- sync API ---------------------------------------------------------------------------
    def add(
        self, key: Any, value: Any, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None
    ) -> bool:
        full = self.make_and_validate_key(key, version=version)
        ttl = self.get_backend_timeout(timeout)
        try:
            if ttl == 0:  # Django: report whether it would have been added, store nothing
                self._check_encodable(value)
                return not self._cache.exists(full)
            return self._cache.add(full, value, ttl)
        except SerializationError as exc:
            raise _unencodable(exc) from exc

    def get(self, key: Any, default: Any = None, version: int | None = None) -> Any:
        return self._cache.get(self.make_and_validate_key(key, version=version), default)

    def set(
        self, key: Any, value: Any, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None
    ) -> None:
        full = self.make_and_validate_key(key, version=version)
        try:
            self._cache.set(full, value, self.get_backend_timeout(timeout))
        except SerializationError as exc:
            raise _unencodable(exc) from exc

    def touch(self, key: Any, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None) -> bool:
        full = self.make_and_validate_key(key, version=version)
        return self._cache.expire(full, self.get_backend_timeout(timeout))

    def delete(self, key: Any, version: int | None = None) -> bool:
        return self._cache.delete(self.make_and_validate_key(key, version=version))

    def get_many(self, keys: Iterable[Any], version: int | None = None) -> dict[Any, Any]:
        key_map = {self.make_and_validate_key(key, version=version): key for key in keys}
        if not key_map:
            return {}
        found = self._cache.get_many(key_map)
        return {key_map[full]: value for full, value in found.items()}

    def has_key(self, key: Any, version: int | None = None) -> bool:
        return self._cache.exists(self.make_and_validate_key(key, version=version))

    def incr(self, key: Any, delta: int = 1, version: int | None = None) -> int:
        full = self.make_and_validate_key(key, version=version)
        # Django raises on a missing key; Redis INCRBY would start at 0. Check first (as
        # Django's RedisCache does); should the entry expire in between, the counter cachekit
        # then creates gets the default timeout rather than living forever.
        if not self._cache.exists(full):
            raise ValueError(f"Key '{key}' not found")
        try:
            return self._cache.incr(full, delta, ttl=self.get_backend_timeout())
        except IncrementError as exc:
            raise NotAnIntegerError(str(exc)) from exc

    def _many(
        self, data: Mapping[Any, Any], timeout: Any, version: int | None
    ) -> tuple[dict[str, Any], float | None]:
        """set_many's entries under their full keys, and their TTL (what aset_many shares)."""
        items = {self.make_and_validate_key(key, version=version): v for key, v in data.items()}
        return items, self.get_backend_timeout(timeout)

    def set_many(
        self, data: Mapping[Any, Any], timeout: Any = DEFAULT_TIMEOUT, version: int | None = None
    ) -> list[Any]:
        """Store several entries in one round trip; the keys that failed (all or none)."""
        if not data:
            return []
        items, ttl = self._many(data, timeout, version)
        with _encodable():
            stored = self._cache.set_many(items, ttl)
        return [] if stored or ttl == 0 else list(data)

    def delete_many(self, keys: Iterable[Any], version: int | None = None) -> None:
        full = [self.make_and_validate_key(key, version=version) for key in keys]
        if full:
            self._cache.delete_many(full)

    def clear(self) -> None:
        """Remove every entry of this cache's namespace (not the rest of the database)."""
        self._cache.clear()

    def close(self, **kwargs: Any) -> None:
        """Django calls this after every request: the shared pool stays open on purpose."""

    # -- async API: native, over cachekit's async side (redis.asyncio) ---------------------
    async def aadd(
        self, key: Any, value: Any, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None
    ) -> bool:
        full = self.make_and_validate_key(key, version=version)
        ttl = self.get_backend_timeout(timeout)
        try:
            if ttl == 0:
                self._check_encodable(value)
                return not await self._cache.aexists(full)
            return await self._cache.aadd(full, value, ttl)
        except SerializationError as exc:
            raise _unencodable(exc) from exc

    async def aget(self, key: Any, default: Any = None, version: int | None = None) -> Any:
        return await self._cache.aget(self.make_and_validate_key(key, version=version), default)

    async def aset(
        self, key: Any, value: Any, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None
    ) -> None:
        full = self.make_and_validate_key(key, version=version)
        try:
            await self._cache.aset(full, value, self.get_backend_timeout(timeout))
        except SerializationError as exc:
            raise _unencodable(exc) from exc

    async def atouch(
        self, key: Any, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None
    ) -> bool:
        full = self.make_and_validate_key(key, version=version)
        return await self._cache.aexpire(full, self.get_backend_timeout(timeout))

    async def adelete(self, key: Any, version: int | None = None) -> bool:
        return await self._cache.adelete(self.make_and_validate_key(key, version=version))

    async def aget_many(self, keys: Iterable[Any], version: int | None = None) -> dict[Any, Any]:
        key_map = {self.make_and_validate_key(key, version=version): key for key in keys}
        if not key_map:
            return {}
        found = await self._cache.aget_many(key_map)
        return {key_map[full]: value for full, value in found.items()}

    async def ahas_key(self, key: Any, version: int | None = None) -> bool:
        return await self._cache.aexists(self.make_and_validate_key(key, version=version))

    async def aincr(self, key: Any, delta: int = 1, version: int | None = None) -> int:
        full = self.make_and_validate_key(key, version=version)
        if not await self._cache.aexists(full):
            raise ValueError(f"Key '{key}' not found")
        try:
            return await self._cache.aincr(full, delta, ttl=self.get_backend_timeout())
        except IncrementError as exc:
            raise NotAnIntegerError(str(exc)) from exc

    async def adecr(self, key: Any, delta: int = 1, version: int | None = None) -> int:
        return await self.aincr(key, -delta, version=version)

    async def aset_many(
        self, data: Mapping[Any, Any], timeout: Any = DEFAULT_TIMEOUT, version: int | None = None
    ) -> list[Any]:
        if not data:
            return []
        items, ttl = self._many(data, timeout, version)
        with _encodable():
            stored = await self._cache.aset_many(items, ttl)
        return [] if stored or ttl == 0 else list(data)

    async def adelete_many(self, keys: Iterable[Any], version: int | None = None) -> None:
        full = [self.make_and_validate_key(key, version=version) for key in keys]
        if full:
            await self._cache.adelete_many(full)

    async def aclear(self) -> None:
        await self._cache.aclear()

    async def aclose(self, **kwargs: Any) -> None:
        """See :meth:`close`."""

    # aget_or_set, aincr_version and adecr_version are BaseCache's, written over the native
    # aget/aadd/aset/adelete above (no thread hop)

    # -- helpers ----------------------------------------------------------------------------
    def _check_encodable(self, value: Any) -> None:
        """Raise as a store would for a value the serializer cannot encode."""
        serializer = self._cache.serializer
        if serializer is not None:
            serializer.dumps(value)


def _unencodable(exc: SerializationError) -> UnencodableValueError:
    return UnencodableValueError(str(exc))


@contextlib.contextmanager
def _encodable() -> Iterator[None]:
    """cachekit's SerializationError as the UnencodableValueError Django's callers expect."""
    try:
        yield
    except SerializationError as exc:
        raise _unencodable(exc) from exc


# -- cache_page: cachekit's HTTP cache, with stampede protection -----------------------------
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
    **options: Any,
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


# rate limits (429, RateLimit headers): in their own module, re-exported here
from .ratelimit import *  # noqa: E402, F403  (ratelimit, RateLimitMiddleware)
