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

import contextlib
import hashlib
import logging
import pickle
import re
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, TypeVar

from .. import missing_extra

try:
    from django.conf import settings
    from django.core.cache.backends.base import (
        DEFAULT_TIMEOUT,
        MEMCACHE_MAX_KEY_LENGTH,
        BaseCache,
        default_key_func,
    )
    from django.core.exceptions import ImproperlyConfigured
except ModuleNotFoundError as exc:
    raise missing_extra(exc, "django", "django") from exc

from cachekit import Cache, ConfigurationError, IncrementError, SerializationError

__all__ = [
    "CachekitCache",
    "InvalidCacheOptionsError",
    "NotAnIntegerError",
    "UnencodableValueError",
    "cache_page",
    "close_shared_caches",
]

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
        items, ttl = self._many(data, timeout, version)
        with _encodable():
            stored = not items or self._cache.set_many(items, ttl)
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
        items, ttl = self._many(data, timeout, version)
        with _encodable():
            stored = not items or await self._cache.aset_many(items, ttl)
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


# cache_page: cachekit's HTTP cache, with stampede protection, in its own module
from .page import cache_page  # noqa: E402  (it needs CachekitCache, defined above)

# rate limits (429, RateLimit headers): in their own module, re-exported here
from .ratelimit import *  # noqa: E402, F403  (ratelimit, RateLimitMiddleware)
