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
namespaced twice: the cachekit namespace is ``"{KEY_PREFIX}:"`` (``"django:"`` when
KEY_PREFIX is empty, ``OPTIONS["prefix"]`` if given) with no cachekit version segment,
and Django's part is ``"{version}:{key}"``. So with the default key function the Redis key
is exactly what Django's own ``default_key_func`` would make (``shop:1:answer``). A custom
``KEY_FUNCTION``'s output is stored under the namespace as it is. ``clear()`` removes the
whole namespace (every Django version and custom key of this prefix, by SCAN, never
FLUSHDB), so another application, or another KEY_PREFIX, in the same Redis database keeps
its data.

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
import hashlib
import pickle
import re
import threading
import weakref
from collections.abc import Awaitable, Callable, Iterable, Mapping
from functools import wraps
from inspect import iscoroutinefunction
from typing import Any, TypeVar

from django.conf import settings
from django.core.cache.backends.base import (
    DEFAULT_TIMEOUT,
    MEMCACHE_MAX_KEY_LENGTH,
    BaseCache,
    default_key_func,
)
from django.core.exceptions import ImproperlyConfigured
from django.middleware.cache import CacheMiddleware

from cachekit import Cache, CacheKitError, IncrementError, SerializationError

__all__ = [
    "CachekitCache",
    "NotAnIntegerError",
    "UnencodableValueError",
    "cache_page",
    "close_shared_caches",
]

V = TypeVar("V", bound=Callable[..., Any])

# OPTIONS passed through to cachekit.Cache
_CACHEKIT_OPTIONS = frozenset(
    {
        "prefix",
        "serializer",
        "secret",
        "compress",
        "compress_threshold",
        "timeout",
        "connect_timeout",
        "on_error",
        "retry_interval",
        "max_entries",
    }
)
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
                cache = _shared[key] = Cache(location, **options)
    return cache


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
    unknown = set(given) - _CACHEKIT_OPTIONS - _DJANGO_OPTIONS
    if unknown:
        raise ImproperlyConfigured(
            f"CachekitCache: unknown OPTIONS {sorted(unknown)}; accepted: "
            + ", ".join(sorted(_CACHEKIT_OPTIONS | _DJANGO_OPTIONS))
        )
    options = {name: value for name, value in given.items() if name in _CACHEKIT_OPTIONS}
    if "MAX_ENTRIES" in given and "max_entries" not in options:
        options["max_entries"] = int(given["MAX_ENTRIES"])
    options["prefix"] = options.get("prefix") or params.get("KEY_PREFIX") or "django"
    options["version"] = ""  # an unversioned namespace: Django's version is in every key
    options.setdefault("serializer", "pickle")
    if options["serializer"] == "pickle" and not options.get("secret"):
        options["secret"] = _derived_secret()
    return options


class CachekitCache(BaseCache):  # type: ignore[misc]  # django ships no type hints
    """A Django cache backend; ``LOCATION`` is a cachekit URL, ``OPTIONS`` cachekit options.

    Accepted OPTIONS: ``prefix``, ``serializer``, ``secret``, ``compress``,
    ``compress_threshold``, ``timeout`` / ``connect_timeout`` (seconds, per Redis call),
    ``on_error`` (``"ignore"`` or ``"raise"``), ``retry_interval``, ``max_entries`` (memory),
    and Django's ``MAX_ENTRIES`` (memory) and ``CULL_FREQUENCY`` (ignored: eviction is LRU).
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

    def set_many(
        self,
        data: Mapping[Any, Any],
        timeout: Any = DEFAULT_TIMEOUT,
        version: int | None = None,
    ) -> list[Any]:
        """Store several entries in one round trip; the keys that failed (all or none)."""
        if not data:
            return []
        items = {self.make_and_validate_key(key, version=version): v for key, v in data.items()}
        ttl = self.get_backend_timeout(timeout)
        try:
            stored = self._cache.set_many(items, ttl)
        except SerializationError as exc:
            raise _unencodable(exc) from exc
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
        self,
        data: Mapping[Any, Any],
        timeout: Any = DEFAULT_TIMEOUT,
        version: int | None = None,
    ) -> list[Any]:
        if not data:
            return []
        items = {self.make_and_validate_key(key, version=version): v for key, v in data.items()}
        ttl = self.get_backend_timeout(timeout)
        try:
            stored = await self._cache.aset_many(items, ttl)
        except SerializationError as exc:
            raise _unencodable(exc) from exc
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


# -- cache_page with stampede protection ------------------------------------------------------
class _SingleFlight:
    """One thread per key computes; the others wait for it, then read what it stored."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: dict[str, threading.Event] = {}

    def join(self, key: str) -> threading.Event | None:
        """None if the caller leads (and must call :meth:`done`), else the leader's event."""
        with self._lock:
            event = self._running.get(key)
            if event is None:
                self._running[key] = threading.Event()
            return event

    def done(self, key: str) -> None:
        with self._lock:
            event = self._running.pop(key)
        event.set()


class _AsyncSingleFlight:
    """The same for coroutines, per event loop (an asyncio.Event belongs to one loop)."""

    def __init__(self) -> None:
        self._loops: weakref.WeakKeyDictionary[Any, dict[str, asyncio.Event]] = (
            weakref.WeakKeyDictionary()
        )

    def join(self, key: str) -> asyncio.Event | None:
        running = self._loops.setdefault(asyncio.get_running_loop(), {})
        event = running.get(key)
        if event is None:
            running[key] = asyncio.Event()
        return event

    def done(self, key: str) -> None:
        self._loops[asyncio.get_running_loop()].pop(key).set()


class _PageLock:
    """The cross-process half: cachekit's lock on the page, when the backend is cachekit's.

    Taken by the one request per process that leads; ``None`` from :meth:`take` means "go
    ahead and compute" (lock free, or waited for and taken, or unusable: a lock that cannot
    be taken, e.g. Redis is down, must not stop the page from being served). ``True`` means
    the lock was held by another process until now: the page is probably cached already.
    """

    def __init__(self, backend: Any, name: str, ttl: float, timeout: float) -> None:
        cachekit = getattr(backend, "cachekit", None)
        self._lock: Any = cachekit.lock(name, ttl=ttl, timeout=timeout) if cachekit else None
        self._held = False

    def take(self) -> bool:
        if self._lock is None:
            return False
        try:
            if self._lock.acquire(blocking=False):
                self._held = True
                return False
            self._held = self._lock.acquire()  # someone elsewhere computes: wait for them
        except CacheKitError:  # timed out, or the backend is failing: compute regardless
            return False
        return True

    async def atake(self) -> bool:
        if self._lock is None:
            return False
        try:
            if await self._lock.aacquire(blocking=False):
                self._held = True
                return False
            self._held = await self._lock.aacquire()
        except CacheKitError:
            return False
        return True

    def release(self) -> None:
        if self._held:
            self._held = False
            with contextlib.suppress(CacheKitError):  # expired meanwhile: nothing to give back
                self._lock.release()

    async def arelease(self) -> None:
        if self._held:
            self._held = False
            with contextlib.suppress(CacheKitError):
                await self._lock.arelease()


def cache_page(
    timeout: float | None,
    *,
    cache: str | None = None,
    key_prefix: str | None = None,
    lock: bool = True,
    lock_ttl: float = 30.0,
    lock_timeout: float = 30.0,
) -> Callable[[V], V]:
    """Django's ``cache_page`` (same arguments, keys and headers), plus stampede protection.

    With ``lock=True`` (the default), simultaneous requests for the same cold page run the
    view once: in each process one request leads and the others wait for it in memory (no
    polling); on a :class:`CachekitCache`, the leaders of different processes also take
    cachekit's lock on the page (``cache.lock``: Redis ``SET NX PX``, expiring after
    ``lock_ttl`` seconds should a holder die), so the whole fleet runs the view once.
    Waiters give up after ``lock_timeout`` seconds and compute the page themselves; so do
    they when the page turned out not to be cacheable. Other backends get the in-process
    part. A TemplateResponse is rendered inside the lock, so waiters find the finished page.
    """

    def decorator(view: V) -> V:
        middleware = CacheMiddleware(
            view, page_timeout=timeout, cache_alias=cache, key_prefix=key_prefix
        )
        flight_prefix = f"cache_page:{middleware.cache_alias}:{middleware.key_prefix}:"

        def lookup(request: Any) -> Any:
            return middleware.process_request(request)

        def finish(request: Any, response: Any) -> Any:
            render = getattr(response, "render", None)
            if callable(render) and not getattr(response, "is_rendered", True):
                response = render()
            return middleware.process_response(request, response)

        def page_lock(key: str) -> _PageLock:
            return _PageLock(middleware.cache, key, lock_ttl, lock_timeout)

        if iscoroutinefunction(view):
            aflights = _AsyncSingleFlight()
            async_view: Callable[..., Awaitable[Any]] = view

            async def compute(request: Any, args: Any, kwargs: Any) -> Any:
                return finish(request, await async_view(request, *args, **kwargs))

            async def async_wrapper(request: Any, *args: Any, **kwargs: Any) -> Any:
                response = lookup(request)
                if response is not None:
                    return response
                if not (lock and getattr(request, "_cache_update_cache", False)):
                    return await compute(request, args, kwargs)
                key = flight_prefix + request.build_absolute_uri()
                event = aflights.join(key)
                if event is not None:  # a request of this process computes it: wait, re-read
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(event.wait(), lock_timeout)
                    response = lookup(request)
                    if response is not None:
                        return response
                    return await compute(request, args, kwargs)
                held = page_lock(key)
                try:
                    if await held.atake():  # another process computed it meanwhile
                        response = lookup(request)
                        if response is not None:
                            return response
                    return await compute(request, args, kwargs)
                finally:
                    await held.arelease()
                    aflights.done(key)

            return wraps(view)(async_wrapper)  # type: ignore[return-value]

        flights = _SingleFlight()

        def wrapper(request: Any, *args: Any, **kwargs: Any) -> Any:
            response = lookup(request)
            if response is not None:
                return response
            if not (lock and getattr(request, "_cache_update_cache", False)):
                return finish(request, view(request, *args, **kwargs))
            key = flight_prefix + request.build_absolute_uri()
            event = flights.join(key)
            if event is not None:  # a request of this process computes it: wait, re-read
                event.wait(lock_timeout)
                response = lookup(request)
                if response is not None:
                    return response
                return finish(request, view(request, *args, **kwargs))
            held = page_lock(key)
            try:
                if held.take():  # another process computed it meanwhile
                    response = lookup(request)
                    if response is not None:
                        return response
                return finish(request, view(request, *args, **kwargs))
            finally:
                held.release()
                flights.done(key)

        return wraps(view)(wrapper)  # type: ignore[return-value]

    return decorator
