"""The :class:`Cache`: the one object users hold."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import cached_property
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, overload
from urllib.parse import parse_qsl, urlencode, urlsplit

from ._config import OPTIONS, Layer, accepted_names, merge, redis_url_arguments, unknown_option
from .backends import backends_for
from .backends.base import capabilities_of
from .backends.memory.store import AsyncMemoryBackend
from .core.breaker import CircuitBreaker
from .core.codec import Codec, ObjectCodec, codec_for
from .core.concurrency import AsyncRefreshPool, FlightTables, RefreshPool
from .core.generation import Generation
from .core.keys import Namespace
from .core.policy import DEFAULT, Counters
from .decorator.decorate import decorate
from .decorator.types import CachedDecorator, CachedFunction, CachedOptions
from .exceptions import ConfigurationError
from .kv._async_ops import AsyncCacheOps
from .kv._sync_ops import CacheOps
from .leases.stores import leases_for
from .locks.lock import CacheLock
from .serializers import Serializer
from .write.strategies import (
    TagSpec,
    WriteBehind,
    WriteBehindOptions,
    WriteStrategies,
    WriteThrough,
    WriteThroughOptions,
)

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from .kv.inspection import EntryInfo
    from .ratelimit import RateLimiter

__all__ = ["Cache"]

F = TypeVar("F", bound=Callable[..., Any])
_P = ParamSpec("_P")
_R = TypeVar("_R")
_T = TypeVar("_T")

_SCHEMES = ("memory", "redis", "rediss", "unix", "fakeredis", "redis+cluster", "redis+sentinel")
_REDIS_SCHEMES = ("redis", "rediss", "unix")
_NOT_OPTIONS = ("url", "client", "backend", "async_backend")  # constructor arguments only
# CACHEKIT_* variables that are not options of a cache: the URL, the tests' redis-server,
# the write-behind journal's directory
_OTHER_ENV = frozenset({"CACHEKIT_URL", "CACHEKIT_REDIS_SERVER", "CACHEKIT_JOURNAL_DIR"})


# the keyword arguments of @cache.cached (typed in its overloads: CachedOptions)
_CACHED_OPTIONS: frozenset[str] = CachedOptions.__optional_keys__


class Cache(CacheOps, AsyncCacheOps):
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

    How it is built: a capability with state of its own is a feature object wired here at
    construction, and the cache's methods of its names forward to it (the write
    strategies: ``self._writes``, :class:`~cachekit.write.strategies.WriteStrategies`);
    ``lock()`` and ``rate_limiter()`` make an object per call. The key/value API stays in
    the two bases ``CacheOps`` / ``AsyncCacheOps`` (the sync one generated from the async
    one by ``scripts/unasync.py``): they are not a feature of the cache but its own I/O
    over its own state (backend, codec, breaker, counters), which every feature uses, and
    ``get`` and ``@cached`` hits run through them: forwarding each of their ~40 methods
    through an object would cost every hit an attribute lookup and a call, and spell
    every signature twice.
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
        compress_threshold: int | None = None,
        max_decompressed_size: int | None = None,
        timeout: float | None = None,
        connect_timeout: float | None = None,
        on_error: str | None = None,
        retry_interval: float | None = None,
        generation_poll: float | None = None,
        max_entries: int | None = None,
        eviction: str | None = None,
        ignore_cookies: Iterable[str] | None = None,
        vary_cookies: Iterable[str] | None = None,
        owner: str | None = None,
        near: bool | Mapping[str, Any] | None = None,
        metrics: Any = None,
    ) -> None:
        """Options (see :data:`cachekit._config.OPTIONS`, the README's table): ``None``
        means "not given"; then the URL's query string, then the option's default."""
        arguments = {
            "prefix": prefix, "version": version, "default_ttl": default_ttl,
            "serializer": serializer, "secret": secret, "compress": compress,
            "compress_threshold": compress_threshold,
            "max_decompressed_size": max_decompressed_size, "timeout": timeout,
            "connect_timeout": connect_timeout, "on_error": on_error,
            "retry_interval": retry_interval, "generation_poll": generation_poll,
            "max_entries": max_entries,
            "eviction": eviction, "ignore_cookies": ignore_cookies,
            "vary_cookies": vary_cookies, "owner": owner,
        }  # fmt: skip
        arguments["near"] = near
        arguments["metrics"] = metrics
        url, query = self._split_url(url)
        options = merge([Layer("arguments", arguments), Layer("the cache URL", query, True, "url")])
        self._options = options
        self.url = url
        self._client_given = client if client is not None else backend
        # with an owner: "!owner:prefix:", which no plain prefix produces (_config._prefix)
        # The base namespace (locks, queues, rate limits, sessions; generation 0); the
        # entries live in self._generation.ns (see cachekit.core.generation)
        self._base_ns = Namespace(options["prefix"], options["version"], options["owner"])
        self.default_ttl: float | None = options["default_ttl"]
        self._raise_errors = options["on_error"] == "raise"
        self.counters = Counters()
        # updates / invalidates / write_through / write_behind; close() flushes its queues first
        self._writes = WriteStrategies(self)
        # background refreshes (stale_ttl, early_refresh): a few workers, made on first use
        self._refresh_pool = RefreshPool()
        self._arefresh_pool = AsyncRefreshPool()
        self._flights = FlightTables()  # the stampede's computations in progress

        backend, async_backend = self._make_backends(
            url, client, backend, async_backend, options["timeout"],
            options["connect_timeout"], options["max_entries"], options["eviction"],
        )  # fmt: skip
        if options["near"] is not None:  # an L1 in this process in front of Redis
            from .near import near_backends

            backend, async_backend = near_backends(
                backend, async_backend, options["near"], self._base_ns
            )
        # What the backend can do, asked once: the features are wired from these (None:
        # not offered), never from the backend's type (cachekit.backends.base)
        caps = capabilities_of(backend, async_backend)
        self._is_local: bool = caps.local
        # the generation of the namespace's entries: it moves on Redis (invalidate_all is
        # one INCR), never in process (there invalidate_all removes the entries)
        self._generation = Generation(
            self._base_ns, options["generation_poll"], movable=not caps.local
        )
        if caps.watch_key is not None:  # the near cache's link: a bump is heard at once
            caps.watch_key(self._generation.key, self._generation)
        self._scripts, self._ascripts = caps.scripts, caps.ascripts
        self._wakeups, self._awakeups = caps.wakeups, caps.awakeups
        self._streams, self._astreams = caps.streams, caps.astreams
        self._scan, self._ascan = caps.scan, caps.ascan
        self._tombstones, self._atombstones = caps.tombstones, caps.atombstones
        # every load's store and invalidation goes through these (cachekit.leases.stores)
        self._leases, self._aleases = leases_for(caps, backend, async_backend)
        self._backend_stats = caps.stats
        # an in-process store's per-backend feature state (rate limits, tag index): shared
        # by every cache over the store
        self._local_state = caps.local_state
        self._translate_error = backend.translate_error
        if backend is not None:
            self.__dict__["_backend"] = backend
        if async_backend is not None:
            self.__dict__["_abackend"] = async_backend

        self._codec: Codec = codec_for(options, self._is_local)
        self._breaker = CircuitBreaker(
            self._probe, retry_interval=options["retry_interval"], name=self._describe_backend()
        )
        # A store keeping the objects themselves in this process may offer a lock-free
        # reader: asked for once, here; @cached serves its hits with it
        # (cachekit.decorator.fastpath)
        reader = caps.reader
        self._reader: Callable[[str], Any] | None = (
            reader() if reader is not None and isinstance(self._codec, ObjectCodec) else None
        )
        if self._reader is None and caps.decoding_reader is not None:  # the near cache's L1
            self._reader = caps.decoding_reader(self._codec.loads_meta)
        if options["metrics"] is not None:  # exporters read counters; durations: an event
            from .metrics import attach

            attach(self, options["metrics"])

    # -- construction -----------------------------------------------------------------
    @staticmethod
    def _split_url(url: str | None) -> tuple[str, dict[str, str]]:
        """The URL without cachekit's own query options, and those options (as text).

        A query name that is neither a cachekit option nor one redis-py's ``from_url``
        takes for this scheme is an error now: redis-py would take it, and then fail on
        every call (a cache silently off), or memory:// would ignore it.
        """
        url = url or "memory://"
        parts = urlsplit(url)
        if parts.scheme not in _SCHEMES:
            raise ConfigurationError(
                f"unsupported cache URL {url!r}: the scheme must be one of "
                + ", ".join(f"{s}://" for s in _SCHEMES)
            )
        ours: dict[str, str] = {}
        theirs: list[tuple[str, str]] = []
        redis_names = (
            redis_url_arguments(parts.scheme) if parts.scheme in _REDIS_SCHEMES else frozenset()
        )
        for name, value in parse_qsl(parts.query, keep_blank_values=True):
            if name in OPTIONS:
                ours[name] = value  # an option not allowed in URLs: merge() says why
            elif name in redis_names:
                theirs.append((name, value))
            else:
                raise unknown_option(
                    name,
                    accepted_names("url"),
                    f"the query string of {parts.scheme}:// URLs",
                    {"and redis-py's": redis_names} if redis_names else {},
                )
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
        return backends_for(url, client, timeout, connect_timeout, max_entries, eviction)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **arguments: Any) -> Cache:
        """A cache configured by ``CACHEKIT_URL`` and a ``CACHEKIT_<OPTION>`` variable per
        option (``CACHEKIT_PREFIX``, ``CACHEKIT_DEFAULT_TTL``, ``CACHEKIT_SECRET``, ...: the
        options table). Keyword arguments win over the URL's query, which wins over the
        other variables; an empty variable is unset; an unknown ``CACHEKIT_*`` variable is a
        :class:`ConfigurationError` (a typo must not go unnoticed)."""
        env = os.environ if environ is None else environ
        settings = {
            name[len("CACHEKIT_") :].lower(): value
            for name, value in env.items()
            if name.startswith("CACHEKIT_") and name not in _OTHER_ENV and value != ""
        }
        return cls.from_settings(
            settings,
            env.get("CACHEKIT_URL") or None,
            where="the environment",
            spelling="CACHEKIT_{NAME}",
            also=("CACHEKIT_URL",),
            **arguments,
        )

    @staticmethod
    def check_options(
        settings: Mapping[str, Any],
        *,
        where: str = "settings",
        spelling: str = "{name}",
        also: Iterable[str] = (),
    ) -> dict[str, Any]:
        """``settings`` checked against the options table (names, and values converted
        from text where they are strings), without building a cache: a framework adapter
        checks its configuration early with it. Raises :class:`ConfigurationError`."""
        merged = merge([Layer(where, settings, True, "settings", spelling, tuple(also))])
        return {name: merged[name] for name in settings}

    @classmethod
    def from_settings(
        cls,
        settings: Mapping[str, Any],
        url: str | None = None,
        *,
        where: str = "settings",
        spelling: str = "{name}",
        also: Iterable[str] = (),
        **arguments: Any,
    ) -> Cache:
        """A cache from framework settings (``{option name: value}``, values as Python
        objects or text), below the URL's query and keyword ``arguments`` (which also take
        ``client``, ``backend``, ``async_backend``). ``where`` and ``spelling`` (e.g.
        ``"CACHEKIT_{NAME}"``) name the source in errors; ``also`` lists the source's own
        other names (e.g. ``CACHEKIT_URL``) in them. Used by the Flask and Django adapters
        and :meth:`from_env`."""
        given = {name: arguments.pop(name) for name in _NOT_OPTIONS[1:] if name in arguments}
        base, query = cls._split_url(url)
        options = merge(
            [
                Layer("arguments", arguments),
                Layer("the cache URL", query, True, "url"),
                Layer(where, settings, True, "settings", spelling, tuple(also)),
            ]
        )
        return cls(base, **given, **options)

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
        """The namespace at generation 0: where locks, write-behind queues, rate limits
        and sessions live (a bump never moves them). Entries live in the current
        generation's (:meth:`make_key`; see :mod:`cachekit.core.generation`)."""
        return self._base_ns

    @property
    def generation(self) -> int:
        """The namespace generation this process knows (0 until ``invalidate_all()``)."""
        return self._generation.number

    @property
    def prefix(self) -> str:
        return self._options["prefix"]  # type: ignore[no-any-return]

    @property
    def version(self) -> int | str:
        return self._base_ns.version

    @property
    def serializer(self) -> Serializer | None:
        return getattr(self._codec, "serializer", None)

    @property
    def options(self) -> Mapping[str, Any]:
        """Every option's value for this cache (read-only; see the options table)."""
        return MappingProxyType(self._options)

    @property
    def client(self) -> Any:
        """The sync redis-py client a Redis cache talks through (``redis.Redis``,
        ``RedisCluster`` or the Sentinel's primary), for speaking Redis yourself; a
        ``ConfigurationError`` for a backend without one (memory)."""
        client = getattr(self._backend, "client", None)
        if client is None:
            raise ConfigurationError(f"{self._describe_backend()} has no Redis client")
        return client()

    @property
    def async_client(self) -> Any:
        """The asyncio redis-py client of the running event loop (``redis.asyncio.Redis``,
        its ``RedisCluster`` or the Sentinel's primary): :attr:`client`'s twin, for
        coroutines; a ``ConfigurationError`` for a backend without one (memory)."""
        client = getattr(self._abackend, "client", None)
        if client is None:
            raise ConfigurationError(f"{self._describe_backend()} has no Redis client")
        return client()

    @property
    def shared(self) -> bool:
        """Whether the entries live outside this process (a remote backend, seen by other
        processes: cross-process locks pay off) rather than in it (memory)."""
        return not self._is_local

    def with_options(self, **changes: Any) -> Cache:
        """A cache over the same backend (same connections, same store) with some options
        changed, every other one kept: those of the options table except the backend's own
        (``timeout``, ``connect_timeout``, ``max_entries``, ``eviction``, ``owner``).

        E.g. ``cache.with_options(serializer="raw")`` to keep bytes next to JSON values.
        """
        merge([Layer("with_options()", changes, kind="with_options")])  # names and values
        options = {**self._options, **changes}
        derived = Cache(backend=self._backend, async_backend=self._abackend, **options)
        derived.url = self.url
        derived._client_given = self._client_given
        if (
            derived._base_ns.text == self._base_ns.text
            and derived._generation.poll == self._generation.poll
        ):
            derived._generation = self._generation  # one namespace: one generation known
        derived._leases, derived._aleases = self._leases, self._aleases  # one store: one set
        return derived

    def lock(
        self, name: Any, ttl: float = 10.0, timeout: float | None = None, blocking: bool = True
    ) -> CacheLock:
        """A lock named ``name`` in this cache's namespace, expiring ``ttl`` seconds after
        it is taken; ``timeout`` bounds the wait in ``acquire``/``with`` (None: forever),
        ``blocking=False`` makes ``acquire()`` a single attempt (see :mod:`cachekit.locks`)."""
        return CacheLock(self, name, ttl, timeout, blocking)

    def make_key(self, key: Any) -> str:
        """The full backend key for a user key (namespace and its generation included)."""
        return self._space().key(key)

    def tag_key(self, tag: str) -> str:
        """The backend key of a tag's set (the full keys of the entries stored with
        ``tags=[tag]``, on Redis), in this cache's namespace."""
        from .tags.rules import tag_key

        return tag_key(self._ns.text, tag)

    def inspect(self, key: Any) -> EntryInfo | None:
        """What the entry under ``key`` holds, or None when there is none: an
        :class:`~cachekit.kv.inspection.EntryInfo` (``value``, ``decoded`` and ``note``,
        ``ttl`` left, ``tags``, ``metadata``, ``fresh_for``, ``size``, ``format``),
        decoded with this cache's codec as a read would, without counting a hit or a miss.
        For operators and tests (``cachekit inspect KEY``). A failing backend raises
        :class:`~cachekit.BackendError` whatever ``on_error``."""
        from .kv._sync_inspect import inspect_entry

        return inspect_entry(self, key)

    async def ainspect(self, key: Any) -> EntryInfo | None:
        from .kv._async_inspect import ainspect_entry

        return await ainspect_entry(self, key)

    @overload
    def cached(self, func: classmethod[_T, _P, _R], /) -> classmethod[_T, _P, _R]: ...

    @overload
    def cached(  # type: ignore[overload-overlap]  # a staticmethod is callable too
        self, func: staticmethod[_P, _R], /
    ) -> staticmethod[_P, _R]: ...

    @overload
    def cached(self, func: Callable[_P, _R], /) -> CachedFunction[_P, _R]: ...

    @overload
    def cached(self, func: None = None, /, **options: Unpack[CachedOptions]) -> CachedDecorator: ...

    def cached(self, func: Any = None, /, **options: Any) -> Any:
        """Cache a function's results (sync or async; functions, methods, classmethods).

        ``ttl`` seconds (default: the cache's ``default_ttl``); ``key`` a template over the
        arguments (``"user:{user_id}"``, ``"{user.id}"``) or a callable (default: module,
        qualified name and the arguments normalised through the signature); ``name`` in
        place of the module and qualified name (a factory's closures share their qualified
        name: a second one with other captured values is refused, see
        :mod:`cachekit.decorator.names`); ``tags``
        stored with the entry; ``cache_none=False`` to not cache ``None``;
        ``condition(result)`` must be true and ``unless(result)`` false to store.

        Stampede protection (see :mod:`cachekit.stampede.rules`): ``lock=True`` computes a
        missing key once (threads, tasks, and processes on Redis; ``lock_ttl`` bounds a
        crashed holder, waiters compute themselves after ``lock_timeout``);
        ``early_refresh`` (True, or an XFetch beta) refreshes in the background before
        expiry; ``stale_ttl`` serves the expired value that long while one background
        refresh runs; ``stale_if_error`` serves it when the function raises.

        The decorated function gains ``.key(...)``, ``.invalidate(...)`` /
        ``.ainvalidate(...)``, ``.refresh(...)`` and ``__wrapped__``.
        """
        # the options as typed above; their defaults and checks: decorate(), the one place
        unknown = options.keys() - _CACHED_OPTIONS
        if unknown:
            raise TypeError(f"cached() got an unexpected keyword argument {min(unknown)!r}")
        if func is not None:
            return decorate(self, func, **options)
        return lambda f: decorate(self, f, **options)

    # -- write strategies (made by the feature object self._writes) ----------------------
    def updates(
        self,
        func: Any = None,
        /,
        *,
        key: str | Callable[..., Any],
        ttl: Any = DEFAULT,
        tags: TagSpec = None,
    ) -> Any:
        """Run the function, then store its return value under ``key`` (a template over
        the arguments, as for ``@cached``: ``"user:{user.id}"``), with ``ttl`` and ``tags``.
        """
        return self._writes.updates(func, key, ttl, tags)

    def invalidates(
        self,
        func: Any = None,
        /,
        *,
        key: str | Callable[..., Any] | Sequence[str | Callable[..., Any]] | None = None,
        tags: TagSpec = None,
    ) -> Any:
        """Run the function, then delete ``key`` (one template, or several) and every
        entry tagged with ``tags`` (templates over the arguments allowed)."""
        return self._writes.invalidates(func, key, tags)

    def write_through(
        self,
        key: str | Callable[[Any], Any],
        load: Callable[..., Any] | None,
        store: Callable[..., Any],
        **options: Unpack[WriteThroughOptions],
    ) -> WriteThrough:
        """Write-through over a source: ``load(id)``, ``store(id, value)`` and optionally
        ``delete(id)``, sync or async. ``key`` is ``"user:{}"`` or a callable of the id."""
        return self._writes.write_through(key, load, store, **options)

    def write_behind(
        self,
        key: str | Callable[[Any], Any],
        store_many: Callable[[dict[Any, Any]], Any],
        load: Callable[..., Any] | None = None,
        **options: Unpack[WriteBehindOptions],
    ) -> WriteBehind:
        """Write-behind: ``store_many({id: value, ...})`` is called by a background
        worker with batches of at most ``batch_size``; see :class:`WriteBehind`.

        ``exit_timeout``: how long ``close()`` and interpreter exit wait for the writes to
        be stored (and how long ``flush()`` waits for an unreachable Redis); what is not
        stored by then goes to a journal file in ``journal_dir`` (True: the default,
        ``$CACHEKIT_JOURNAL_DIR`` or ``~/.local/state/cachekit/write-behind``; False: no
        file, those writes are lost) and is queued again by the next process."""
        return self._writes.write_behind(key, store_many, load, **options)

    def rate_limiter(
        self, name: str, rate: Any = "100/minute", *, burst: int | None = None,
        algorithm: str = "gcra", on_error: str = "allow",
    ) -> RateLimiter:  # fmt: skip
        """A named rate limit in this cache's backend (see :mod:`cachekit.ratelimit`)."""
        from .ratelimit import RateLimiter

        return RateLimiter(self, name, rate, burst=burst, algorithm=algorithm, on_error=on_error)

    def rate_limit(
        self, rate: Any, **options: Any
    ) -> Callable[[Callable[_P, _R]], Callable[_P, _R]]:
        """Limit calls of a function, raising :class:`~cachekit.RateLimited` (key=, name=,
        cost=, burst=, algorithm=, on_error=: :func:`cachekit.ratelimit.rate_limit`)."""
        from .ratelimit import rate_limit

        return rate_limit(self, rate, **options)

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
            "joins": counters.joins,
            "lock_waits": counters.lock_waits,
            "circuit": self._breaker.state,
            "outages": self._breaker.trips,
            "backend": self._describe_backend(),
        }
        if self._backend_stats is not None:
            stats.update(self._backend_stats())
        return stats

    async def astats(self) -> dict[str, Any]:
        return self.stats()

    def health(self, timeout: float = 0.025) -> dict[str, Any]:
        """``{"ok", "backend", "latency_ms", "breaker", "pending_invalidations",
        "write_behind", "entries", "error"}`` within ``timeout`` seconds, even with the
        backend frozen (see :mod:`cachekit.metrics.health`)."""
        from .metrics.health import health

        return health(self, timeout)

    async def ahealth(self, timeout: float = 0.025) -> dict[str, Any]:
        from .metrics.health import ahealth

        return await ahealth(self, timeout)

    def __enter__(self) -> Cache:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    async def __aenter__(self) -> Cache:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"<Cache {self._describe_backend()} prefix={self._base_ns.prefix!r}>"
