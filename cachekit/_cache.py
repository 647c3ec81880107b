"""The :class:`Cache`: the one object users hold."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from functools import cached_property
from typing import Any, ParamSpec, TypeVar, overload
from urllib.parse import parse_qsl, urlencode, urlsplit

from ._async.ops import AsyncCacheOps
from ._breaker import CircuitBreaker
from ._codec import Boxed, BytesCodec, Codec, ObjectCodec
from ._decorator import decorate
from ._keys import Namespace
from ._lock import LockMixin
from ._policy import DEFAULT, Counters
from ._sync.ops import SyncCacheOps
from ._typing import CachedDecorator, CachedFunction
from ._write import WriteStrategies
from .backends.memory import AsyncMemoryBackend, MemoryBackend
from .exceptions import ConfigurationError
from .serializers import Serializer, get_serializer

__all__ = ["Cache"]

F = TypeVar("F", bound=Callable[..., Any])
_P = ParamSpec("_P")
_R = TypeVar("_R")
_T = TypeVar("_T")

_SCHEMES = ("memory", "redis", "rediss", "unix", "fakeredis")
DEFAULT_TIMEOUT = 0.25
"""Redis socket timeout (seconds) when none is given: fail fast, then fail open."""
# options that may be given in the URL's query string as well as as arguments
_URL_OPTIONS = {
    "prefix": str,
    "version": str,
    "default_ttl": float,
    "serializer": str,
    "compress": str,
    "on_error": str,
    "max_entries": int,
    "eviction": str,
    "timeout": float,
}


def _float_or_none(value: str) -> float | None:
    return None if value.lower() in ("", "none", "null") else float(value)


def _memory_lookup(
    backend: MemoryBackend, counters: Counters, fallback: Callable[[str], Any]
) -> Callable[[str], Any]:
    """``Cache._lookup`` specialised for the memory backend storing objects.

    A hit is one dict read, one clock read and an LRU touch, with no backend dispatch,
    codec or circuit breaker in between (memory cannot fail for network reasons); anything
    else (a miss, an expired entry) takes the general path.
    """
    data_get = backend._data.get
    touch = backend._data.move_to_end
    clock = backend._clock

    def lookup(key: str) -> Any:
        entry = data_get(key)
        if entry is not None and entry[1] > clock():
            try:
                touch(key)
            except KeyError:  # removed by another thread since the read: still a hit
                pass
            counters.hits += 1
            value = entry[0]
            return value.value if type(value) is Boxed else value
        return fallback(key)

    return lookup


class Cache(SyncCacheOps, AsyncCacheOps, LockMixin, WriteStrategies):
    """A cache: a namespace in a backend, with a sync and an async API.

    ``Cache()`` is in-process memory. ``Cache("redis://host:6379/0")``, ``rediss://``,
    ``unix:///path.sock``, ``fakeredis://``, ``memory://?max_entries=1000``, or
    ``Cache(client=redis_client)``. Building one makes no network call. Memory evicts
    the least recently used entry, or by W-TinyLFU with ``eviction="tinylfu"``
    (``memory://?eviction=tinylfu``): better hit ratios on skewed traffic and scans, for
    a small cost per hit.

    Errors: by default (``on_error="ignore"``) a failing backend is logged and counted
    and the call goes on without the cache; after a connection error or timeout, a
    circuit breaker skips the backend until a background probe sees it answer again.
    ``on_error="raise"`` raises :class:`~cachekit.BackendError` instead.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        client: Any = None,
        backend: Any = None,
        async_backend: Any = None,
        prefix: str | None = None,
        version: int | str | None = None,
        default_ttl: float | None = None,
        serializer: str | Serializer | None = None,
        secret: str | bytes | None = None,
        compress: str | None = None,
        compress_threshold: int = 1024,
        timeout: float | None = None,
        connect_timeout: float | None = None,
        on_error: str | None = None,
        retry_interval: float = 0.2,
        max_entries: int | None = None,
        eviction: str | None = None,
    ) -> None:
        url, from_url = self._split_url(url)
        prefix = prefix if prefix is not None else from_url.get("prefix", "cachekit")
        version = version if version is not None else from_url.get("version", 1)
        if default_ttl is None and "default_ttl" in from_url:
            default_ttl = from_url["default_ttl"]
        serializer = serializer if serializer is not None else from_url.get("serializer")
        compress = compress if compress is not None else from_url.get("compress")
        on_error = on_error or from_url.get("on_error", "ignore")
        timeout = timeout if timeout is not None else from_url.get("timeout", DEFAULT_TIMEOUT)
        if max_entries is None:
            max_entries = from_url.get("max_entries", 10_000)
        if isinstance(max_entries, bool) or not isinstance(max_entries, int) or max_entries < 1:
            raise ConfigurationError(f"max_entries must be a positive integer, not {max_entries!r}")
        eviction = eviction or from_url.get("eviction", "lru")
        if eviction not in ("lru", "tinylfu"):
            raise ConfigurationError(f"eviction must be 'lru' or 'tinylfu', not {eviction!r}")
        if on_error not in ("ignore", "raise"):
            raise ConfigurationError(f"on_error must be 'ignore' or 'raise', not {on_error!r}")
        if default_ttl is not None and (
            isinstance(default_ttl, bool) or not isinstance(default_ttl, (int, float))
        ):
            raise ConfigurationError(f"default_ttl must be seconds or None, not {default_ttl!r}")

        self.url = url
        self._client_given = client if client is not None else backend
        self._ns = Namespace(prefix, version)
        self.default_ttl = default_ttl
        self._raise_errors = on_error == "raise"
        self.counters = Counters()

        backend, async_backend = self._make_backends(
            url, client, backend, async_backend, timeout, connect_timeout, max_entries, eviction
        )
        self._is_local: bool = bool(getattr(backend, "local", False))
        self._translate_error = backend.translate_error
        if backend is not None:
            self.__dict__["_backend"] = backend
        if async_backend is not None:
            self.__dict__["_abackend"] = async_backend

        self._codec: Codec
        if self._is_local and serializer is None and compress is None:
            self._codec = ObjectCodec()
        else:
            self._codec = BytesCodec(
                get_serializer(serializer, secret=secret),
                compress=compress,
                compress_threshold=compress_threshold,
            )
        self._breaker = CircuitBreaker(
            self._probe, retry_interval=retry_interval, name=self._describe_backend()
        )
        if isinstance(backend, MemoryBackend) and isinstance(self._codec, ObjectCodec):
            # the hit path of @cached on the embedded default: see _memory_lookup
            self._lookup = _memory_lookup(backend, self.counters, self._lookup)  # type: ignore[method-assign,assignment]

    # -- construction -----------------------------------------------------------------
    @staticmethod
    def _split_url(url: str | None) -> tuple[str, dict[str, Any]]:
        """The URL without cachekit's own query options, and those options."""
        url = url or "memory://"
        parts = urlsplit(url)
        if parts.scheme not in _SCHEMES:
            raise ConfigurationError(
                f"unsupported cache URL {url!r}: the scheme must be one of "
                + ", ".join(f"{s}://" for s in _SCHEMES)
            )
        ours: dict[str, Any] = {}
        theirs: list[tuple[str, str]] = []
        for name, value in parse_qsl(parts.query, keep_blank_values=True):
            convert = _URL_OPTIONS.get(name)
            if convert is None:
                theirs.append((name, value))
                continue
            try:
                ours[name] = _float_or_none(value) if convert is float else convert(value)
            except ValueError:
                raise ConfigurationError(f"bad value for {name} in cache URL: {value!r}") from None
        base = url.split("?", 1)[0]  # not urlunsplit: it turns unix:///path into unix:/path
        return (f"{base}?{urlencode(theirs)}" if theirs else base), ours

    def _make_backends(
        self,
        url: str,
        client: Any,
        backend: Any,
        async_backend: Any,
        timeout: float | None,
        connect_timeout: float | None,
        max_entries: int,
        eviction: str = "lru",
    ) -> tuple[Any, Any]:
        if backend is not None or async_backend is not None:
            if backend is None:
                raise ConfigurationError("async_backend= needs a sync backend= as well")
            if async_backend is None and backend.local:
                async_backend = AsyncMemoryBackend(backend)
            return backend, async_backend
        if client is not None:
            from .backends.redis_factory import backends_for_client

            return backends_for_client(client, timeout, connect_timeout)
        scheme = urlsplit(url).scheme
        if scheme == "memory":
            memory = MemoryBackend(max_entries, eviction=eviction)
            return memory, AsyncMemoryBackend(memory)
        from .backends.redis_factory import backends_for_url

        return backends_for_url(url, timeout, connect_timeout)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Cache:
        """A cache configured by ``CACHEKIT_URL``, ``CACHEKIT_PREFIX``, ``CACHEKIT_VERSION``,
        ``CACHEKIT_DEFAULT_TTL``, ``CACHEKIT_SERIALIZER``, ``CACHEKIT_SECRET``,
        ``CACHEKIT_COMPRESS``, ``CACHEKIT_TIMEOUT``, ``CACHEKIT_ON_ERROR``,
        ``CACHEKIT_MAX_ENTRIES`` and ``CACHEKIT_EVICTION``; keyword arguments win over the
        environment."""
        env = os.environ if environ is None else environ
        options: dict[str, Any] = {}
        converters: dict[str, tuple[str, Callable[[str], Any]]] = {
            "CACHEKIT_PREFIX": ("prefix", str),
            "CACHEKIT_VERSION": ("version", str),
            "CACHEKIT_DEFAULT_TTL": ("default_ttl", _float_or_none),
            "CACHEKIT_SERIALIZER": ("serializer", str),
            "CACHEKIT_SECRET": ("secret", str),
            "CACHEKIT_COMPRESS": ("compress", str),
            "CACHEKIT_TIMEOUT": ("timeout", float),
            "CACHEKIT_ON_ERROR": ("on_error", str),
            "CACHEKIT_MAX_ENTRIES": ("max_entries", int),
            "CACHEKIT_EVICTION": ("eviction", str),
        }
        for var, (name, convert) in converters.items():
            raw = env.get(var)
            if raw is None or raw == "":
                continue
            try:
                options[name] = convert(raw)
            except ValueError:
                raise ConfigurationError(f"{var}={raw!r} is not a valid {name}") from None
        options.update(overrides)
        return cls(env.get("CACHEKIT_URL") or None, **options)

    # -- lazily made backends (only when a caller needs that side) ---------------------
    @cached_property
    def _backend(self) -> Any:
        raise ConfigurationError("this cache was given no sync backend")

    @cached_property
    def _abackend(self) -> Any:
        raise ConfigurationError("this cache was given no async backend")

    def _probe(self) -> None:
        if not self._backend.ping():
            raise ConnectionError("ping failed")

    def _describe_backend(self) -> str:
        if self._is_local:
            return "memory" if self._client_given is None else "local backend"
        if self._client_given is not None:
            return "redis client"
        return f"{urlsplit(self.url).scheme} backend"

    # -- public helpers ---------------------------------------------------------------
    @property
    def namespace(self) -> Namespace:
        return self._ns

    @property
    def prefix(self) -> str:
        return self._ns.prefix

    @property
    def version(self) -> int | str:
        return self._ns.version

    @property
    def serializer(self) -> Serializer | None:
        return getattr(self._codec, "serializer", None)

    def with_options(self, **changes: Any) -> Cache:
        """A cache over the same backend (same connections, same store) with some options
        changed: ``serializer``, ``secret``, ``compress``, ``compress_threshold``,
        ``prefix``, ``version``, ``default_ttl``, ``on_error``, ``retry_interval``.

        E.g. ``cache.with_options(serializer="raw")`` to keep bytes next to JSON values.
        """
        allowed = {
            "serializer", "secret", "compress", "compress_threshold", "prefix", "version",
            "default_ttl", "on_error", "retry_interval",
        }  # fmt: skip
        unknown = set(changes) - allowed
        if unknown:
            raise ConfigurationError(
                f"with_options() cannot change {', '.join(sorted(unknown))}; "
                f"it takes {', '.join(sorted(allowed))}"
            )
        codec = self._codec
        options: dict[str, Any] = {
            "prefix": self.prefix,
            "version": self.version,
            "default_ttl": self.default_ttl,
            "on_error": "raise" if self._raise_errors else "ignore",
        }
        if isinstance(codec, BytesCodec):
            options["serializer"] = codec.serializer
        options.update(changes)
        derived = Cache(backend=self._backend, async_backend=self._abackend, **options)
        derived.url = self.url
        derived._client_given = self._client_given
        return derived

    def make_key(self, key: Any) -> str:
        """The full backend key for a user key (namespace included)."""
        return self._ns.key(key)

    @overload
    def cached(self, func: classmethod[_T, _P, _R], /) -> classmethod[_T, _P, _R]: ...

    @overload
    def cached(  # type: ignore[overload-overlap]  # a staticmethod is callable too
        self, func: staticmethod[_P, _R], /
    ) -> staticmethod[_P, _R]: ...

    @overload
    def cached(self, func: Callable[_P, _R], /) -> CachedFunction[_P, _R]: ...

    @overload
    def cached(
        self,
        func: None = None,
        /,
        *,
        ttl: Any = DEFAULT,
        key: str | Callable[..., Any] | None = None,
        tags: Iterable[str] | Callable[..., Iterable[str]] | None = None,
        cache_none: bool = True,
        condition: Callable[[Any], bool] | None = None,
        unless: Callable[[Any], bool] | None = None,
        lock: bool = False,
        lock_ttl: float = 10.0,
        lock_timeout: float | None = None,
        early_refresh: bool | float = False,
        stale_ttl: float | None = None,
        stale_if_error: bool | float = False,
    ) -> CachedDecorator: ...

    def cached(
        self,
        func: Any = None,
        /,
        *,
        ttl: Any = DEFAULT,
        key: str | Callable[..., Any] | None = None,
        tags: Iterable[str] | Callable[..., Iterable[str]] | None = None,
        cache_none: bool = True,
        condition: Callable[[Any], bool] | None = None,
        unless: Callable[[Any], bool] | None = None,
        lock: bool = False,
        lock_ttl: float = 10.0,
        lock_timeout: float | None = None,
        early_refresh: bool | float = False,
        stale_ttl: float | None = None,
        stale_if_error: bool | float = False,
    ) -> Any:
        """Cache a function's results (sync or async; functions, methods, classmethods).

        ``ttl`` seconds (default: the cache's ``default_ttl``); ``key`` a template over the
        arguments (``"user:{user_id}"``, ``"{user.id}"``) or a callable (default: module,
        qualified name and the arguments normalised through the signature); ``tags``
        stored with the entry; ``cache_none=False`` to not cache ``None``;
        ``condition(result)`` must be true and ``unless(result)`` false to store.

        Stampede protection (see :mod:`cachekit._stampede`): ``lock=True`` computes a
        missing key once (threads, tasks, and processes on Redis; ``lock_ttl`` bounds a
        crashed holder, waiters compute themselves after ``lock_timeout``);
        ``early_refresh`` (True, or an XFetch beta) refreshes in the background before
        expiry; ``stale_ttl`` serves the expired value that long while one background
        refresh runs; ``stale_if_error`` serves it when the function raises.

        The decorated function gains ``.key(...)``, ``.invalidate(...)`` /
        ``.ainvalidate(...)``, ``.refresh(...)`` and ``__wrapped__``.
        """
        options = dict(
            ttl=ttl, key=key, tags=tags, cache_none=cache_none, condition=condition, unless=unless
        )
        stampede = dict(
            lock=lock, lock_ttl=lock_ttl, lock_timeout=lock_timeout, early_refresh=early_refresh,
            stale_ttl=stale_ttl, stale_if_error=stale_if_error,
        )  # fmt: skip
        options.update(stampede)
        if func is not None:
            return decorate(self, func, **options)
        return lambda f: decorate(self, f, **options)

    def stats(self) -> dict[str, Any]:
        """Counters since the cache was made, the circuit state, and backend facts."""
        counters = self.counters
        lookups = counters.hits + counters.misses
        stats: dict[str, Any] = {
            "hits": counters.hits,
            "misses": counters.misses,
            "hit_rate": counters.hits / lookups if lookups else 0.0,
            "sets": counters.sets,
            "errors": counters.errors,
            "skipped": counters.skipped,
            "corrupt": counters.corrupt,
            "unencodable": counters.unencodable,
            "stale": counters.stale,
            "circuit": self._breaker.state,
            "outages": self._breaker.trips,
            "backend": self._describe_backend(),
        }
        backend = self.__dict__.get("_backend")
        if isinstance(backend, MemoryBackend):
            stats["entries"] = len(backend)
            stats["max_entries"] = backend.max_entries
            stats["evictions"] = backend.evictions
            stats["eviction"] = backend.eviction
        return stats

    async def astats(self) -> dict[str, Any]:
        return self.stats()

    def __enter__(self) -> Cache:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    async def __aenter__(self) -> Cache:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"<Cache {self._describe_backend()} prefix={self._ns.prefix!r}>"
