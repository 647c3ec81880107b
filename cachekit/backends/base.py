"""The backend contract: small on purpose.

Keys reaching a backend are complete (namespaced, normalised) strings; values are whatever
the cache's codec produced (bytes for remote backends, objects for memory). A miss is
:data:`~cachekit.MISSING`, never ``None``. ``ttl`` is seconds (float) or ``None`` for no
expiry; the cache never passes a ttl <= 0. A backend raises whatever its client raises: the
cache translates errors in one place through :meth:`Backend.translate_error`.

The conformance suite in :mod:`cachekit.testing` checks a backend against this contract.

Capabilities: beyond the key/value contract a backend may offer more, each as a method
returning an object (or absent / ``None``: not offered), dogpile's ``get_mutex`` style. A
:class:`~cachekit.Cache` asks for them once, at construction (:func:`capabilities_of`),
and wires its features from the answers; no feature tests the backend's type.

- ``scripts()`` -> :class:`AsyncScripts` / :class:`Scripts`: atomic Lua scripts over keys
  of one cluster slot, run by SHA (the text is sent once when the server lacks it), and
  batches of commands in one round trip. Leases (load vs invalidation), cross-process
  tags and the stampede's lock-and-finish need it. The scripts and the commands of a
  batch are Redis's (``SET``, ``UNLINK``, ``SRANDMEMBER``, ``XCLAIM``, ...): a backend
  offering this speaks Redis commands.
- ``wakeups()`` -> :class:`AsyncWakeups` / :class:`Wakeups`: block until a list has an
  element (the stampede's done lists), bounded below the connection's read timeout.
- ``streams()`` -> :class:`AsyncStreams` / :class:`Streams`: consumer-group streams, the
  durable write-behind queue.
- ``scan()`` -> :class:`AsyncScan` / :class:`Scan`: the keys matching a glob pattern.
- ``tombstones()`` -> :class:`AsyncTombstones` / :class:`Tombstones`: invalidations kept
  in the entries' own keys (a tombstone, absent to the whole contract) and the loads'
  stores that respect them (:mod:`cachekit.leases.rules`). Leases on a remote backend
  need it; without it a load's store is a plain ``set``.
- ``stats()`` -> a dict of the backend's own facts, merged into ``Cache.stats()``.
- ``reader()`` -> ``read(key)``: a lock-free lookup of an in-process store keeping the
  objects themselves (the memory hit path, :mod:`cachekit.decorator.fastpath`).
- ``decoding_reader(loads_meta)`` -> ``read(key)``: the same for an in-process store
  keeping the encoded forms (the near cache's L1, :mod:`cachekit.near`): it decodes an
  entry with the cache codec's ``loads_meta`` once and serves the value (a ``Boxed``
  with metadata) from then on; MISSING when the entry cannot be decoded.
- ``tracking()`` -> the client provider a near cache listens on for invalidations
  (Redis client tracking, :mod:`cachekit.near`); it raises ``ConfigurationError`` where a
  near cache cannot listen. On a cluster it also lists the primaries (``primaries()``,
  ``refresh()``): the near cache keeps one link per primary.
- ``local_state()`` -> :class:`LocalState`: where features keep their state of an
  in-process store, per backend (the rate limiter's buckets, the tag index), so every cache
  over one store shares it as processes share Redis. The memory backend offers one; a
  third-party in-process backend returns one :class:`LocalState` it keeps (made once, the
  same object every call). An in-process backend without it has no rate limits, sessions
  or tags: they raise ``ConfigurationError`` naming this capability.
- Locks are part of the key/value contract (:meth:`Backend.lock`): every backend has one.

Errors raised by capability objects are the client's own; the cache translates them at
its one boundary (:meth:`Backend.translate_error`) like every other backend error. The
lower layer's control flow stays inside (e.g. Redis's ``NoScriptError`` is handled in
``scripts()``).
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Protocol, TypeVar

from ..exceptions import CacheKitError

__all__ = [
    "AsyncBackend",
    "AsyncScan",
    "AsyncScripts",
    "AsyncStreams",
    "AsyncWakeups",
    "Backend",
    "CommandBatch",
    "Capabilities",
    "Leases",
    "AsyncLeases",
    "LocalState",
    "Scan",
    "Scripts",
    "StoreArgs",
    "Streams",
    "Tombstones",
    "AsyncTombstones",
    "Wakeups",
    "capabilities_of",
    "script_sha",
]


class Backend(Protocol):
    #: True when the backend lives in this process (no I/O, never fails for network reasons)
    local: bool

    def get(self, key: str) -> Any: ...
    def get_many(self, keys: Sequence[str]) -> list[Any]: ...
    def set(self, key: str, value: Any, ttl: float | None) -> bool: ...
    def add(self, key: str, value: Any, ttl: float | None) -> bool: ...
    def set_many(self, items: Mapping[str, Any], ttl: float | None) -> None: ...
    def delete(self, key: str) -> bool: ...
    def delete_many(self, keys: Sequence[str]) -> int: ...
    def exists(self, key: str) -> bool: ...
    def ttl(self, key: str) -> Any: ...  # seconds left, None (no expiry) or MISSING
    def expire(self, key: str, ttl: float | None) -> bool: ...
    def incr(self, key: str, delta: int, ttl: float | None) -> int: ...
    def delete_pattern(self, pattern: str) -> int: ...
    def ping(self) -> bool: ...
    # a lock object with redis-py's Lock interface (acquire(blocking=, blocking_timeout=,
    # token=), release, extend(additional_time, replace_ttl), locked, owned), expiring
    # ``ttl`` seconds after it is taken
    def lock(self, key: str, ttl: float) -> Any: ...
    def close(self) -> None: ...
    def translate_error(self, exc: BaseException) -> CacheKitError: ...


class AsyncBackend(Protocol):
    local: bool

    async def get(self, key: str) -> Any: ...
    async def get_many(self, keys: Sequence[str]) -> list[Any]: ...
    async def set(self, key: str, value: Any, ttl: float | None) -> bool: ...
    async def add(self, key: str, value: Any, ttl: float | None) -> bool: ...
    async def set_many(self, items: Mapping[str, Any], ttl: float | None) -> None: ...
    async def delete(self, key: str) -> bool: ...
    async def delete_many(self, keys: Sequence[str]) -> int: ...
    async def exists(self, key: str) -> bool: ...
    async def ttl(self, key: str) -> Any: ...
    async def expire(self, key: str, ttl: float | None) -> bool: ...
    async def incr(self, key: str, delta: int, ttl: float | None) -> int: ...
    async def delete_pattern(self, pattern: str) -> int: ...
    async def ping(self) -> bool: ...
    def lock(self, key: str, ttl: float) -> Any: ...  # methods are coroutines
    async def close(self) -> None: ...
    def translate_error(self, exc: BaseException) -> CacheKitError: ...


# -- capabilities ------------------------------------------------------------------------

_S = TypeVar("_S")


@lru_cache(maxsize=64)
def script_sha(script: str) -> str:
    """The SHA1 a Redis-like server knows ``script`` by (``EVALSHA``)."""
    return hashlib.sha1(script.encode()).hexdigest()


class CommandBatch(Protocol):
    """Commands queued for one round trip (a non-transactional pipeline): Redis command
    methods (``set``, ``delete``, ``unlink``, ``srem``, ``eval``, ...) queue as they are
    called; :meth:`script` queues a script by its SHA."""

    def script(self, script: str, keys: Sequence[Any], args: Sequence[Any]) -> None: ...
    def __getattr__(self, command: str) -> Any: ...


class Scripts(Protocol):
    def run(self, script: str, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        """Run ``script`` atomically (by SHA; the text once if the server lacks it)."""

    def load(self, script: str) -> None:
        """Make sure the server knows ``script`` (before a batch that runs it)."""

    def batch(self, fill: Callable[[CommandBatch], None]) -> list[Any]:
        """Queue commands with ``fill`` and send them in one round trip; the replies. If
        a script of the batch was unknown to the server, it is loaded and the whole batch
        (``fill`` again) is sent once more: a batch with scripts must be safe to repeat.
        The first failed command's error is raised after the batch ran."""


class AsyncScripts(Protocol):
    async def run(self, script: str, keys: Sequence[Any], args: Sequence[Any]) -> Any: ...
    async def load(self, script: str) -> None: ...
    async def batch(self, fill: Callable[[CommandBatch], None]) -> list[Any]: ...


class Wakeups(Protocol):
    def wait(self, list_key: str, timeout: float) -> bytes | None:
        """The first element of ``list_key`` (left in place, for the next waiter), or
        None after ``timeout`` seconds."""

    def wait_limit(self) -> float | None:
        """The longest one wait may block (the connection's read timeout), or None."""


class AsyncWakeups(Protocol):
    async def wait(self, list_key: str, timeout: float) -> bytes | None: ...
    def wait_limit(self) -> float | None: ...


class Streams(Protocol):
    """Consumer-group streams (Redis ``X*`` semantics, redis-py's signatures)."""

    def xreadgroup(
        self, groupname: str, consumername: str, streams: Mapping[Any, Any], count: int
    ) -> Any: ...
    def xautoclaim(
        self,
        name: str,
        groupname: str,
        consumername: str,
        min_idle_time: int,
        start_id: str,
        count: int,
    ) -> Any: ...
    def xrange(self, name: str) -> Any: ...
    def xdel(self, name: str, *ids: Any) -> int: ...
    def identity(self) -> str:
        """Which server holds the streams (journal file names), e.g. ``host:port/db``."""


class AsyncStreams(Protocol):
    async def xreadgroup(
        self, groupname: str, consumername: str, streams: Mapping[Any, Any], count: int
    ) -> Any: ...
    async def xautoclaim(
        self,
        name: str,
        groupname: str,
        consumername: str,
        min_idle_time: int,
        start_id: str,
        count: int,
    ) -> Any: ...
    async def xrange(self, name: str) -> Any: ...
    async def xdel(self, name: str, *ids: Any) -> int: ...
    def identity(self) -> str: ...


class Scan(Protocol):
    def scan(self, pattern: str) -> list[Any]:
        """Every key matching the glob ``pattern`` (incrementally, never ``KEYS``)."""


class AsyncScan(Protocol):
    async def scan(self, pattern: str) -> list[Any]: ...


class StoreArgs(Protocol):
    """What both flavours of :class:`Tombstones` share (sync: it builds a script's
    arguments, for a batch or a stampede's store)."""

    def store_args(
        self,
        key: str,
        entry: Any,
        ttl: float | None,
        since: float,
        lock_key: str | None = None,
        token: bytes | None = None,
        held: bytes | None = None,
    ) -> tuple[list[Any], list[Any]]:
        """``(keys, args)`` of :data:`cachekit.leases.rules.GUARDED_SET`, for a batch."""


class Leases(Protocol):
    """What a load's store and an invalidation go through (:mod:`cachekit.leases.rules`):
    a load that began before an invalidation of its key never stores. A cache wires one
    at construction (:func:`cachekit.leases.stores.leases_for`): the backend's
    ``tombstones()``, else marks in process for an in-process backend, else plain writes
    (a remote backend without tombstones: no lease check is possible)."""

    def revoke(self, keys: Sequence[str]) -> int:
        """Invalidate: delete each key and revoke its loads in flight; how many held an
        entry."""

    def store(self, key: str, entry: Any, ttl: float | None, since: float) -> bool:
        """A load's store (the load began at ``since``, ``time.monotonic()``): only if
        nothing was invalidated since; whether it was stored."""

    def revoke_all(self) -> None:
        """Every load of this store that began before now is refused its store, where the
        store can name them (in process; on Redis the loads of other processes cannot be
        named: nothing to do, the cache's own are refused by its breaker's lease floor)."""

    def fence(self, keys: Sequence[str]) -> None:
        """Revoke the loads in flight of ``keys`` without touching the entries (a waiter
        that gave up on a late leader computes itself; the leader's older result must not
        overwrite its own). Nothing to do where a load's store never overwrites an entry
        (Redis: ``SET NX``)."""


class AsyncLeases(Protocol):
    async def arevoke(self, keys: Sequence[str]) -> int: ...
    async def astore(self, key: str, entry: Any, ttl: float | None, since: float) -> bool: ...
    def revoke_all(self) -> None: ...
    def fence(self, keys: Sequence[str]) -> None: ...


class Tombstones(Leases, StoreArgs, Protocol):
    """The ``tombstones()`` capability: :class:`Leases` kept in the entries' own keys
    (``revoke``: each key becomes a new tombstone), whose guarded store a script can run
    inside a batch (:class:`StoreArgs`)."""


class AsyncTombstones(AsyncLeases, StoreArgs, Protocol):
    pass


class LocalState:
    """The features' state of one in-process store (``local_state()``): one object per
    kind, made on first use and kept as long as the store. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._kinds: dict[type[Any], Any] = {}

    def get(self, kind: type[_S], make: Callable[[], _S] | None = None) -> _S:
        """The store's one ``kind`` object, made by ``make()`` (default ``kind()``) the
        first time it is asked for."""
        found = self._kinds.get(kind)
        if found is None:
            with self._lock:  # two first callers: one object
                found = self._kinds.get(kind)
                if found is None:
                    found = self._kinds[kind] = kind() if make is None else make()
        if not isinstance(found, kind):
            raise TypeError(f"local state of kind {kind.__qualname__} is a {type(found)}")
        return found


def _offered(backend: Any, name: str) -> Any:
    method = getattr(backend, name, None)
    return None if method is None else method()


@dataclass(frozen=True)
class Capabilities:
    """What a sync/async backend pair offers beyond the key/value contract (None: not
    offered), asked once when a cache is made; the ``a``-prefixed ones are the async
    backend's."""

    local: bool
    scripts: Scripts | None
    ascripts: AsyncScripts | None
    wakeups: Wakeups | None
    awakeups: AsyncWakeups | None
    streams: Streams | None
    astreams: AsyncStreams | None
    scan: Scan | None
    ascan: AsyncScan | None
    stats: Callable[[], dict[str, Any]] | None
    reader: Callable[[], Callable[[str], Any]] | None
    decoding_reader: Callable[[Callable[[Any, str], Any]], Callable[[str], Any]] | None = None
    local_state: LocalState | None = None
    # watch_key(key, watcher): call watcher.expire() when the key changes in the backend
    # (the near cache's invalidation link: a namespace generation is learnt at once)
    watch_key: Callable[[str, Any], None] | None = None
    tombstones: Tombstones | None = None
    atombstones: AsyncTombstones | None = None


def capabilities_of(backend: Any, async_backend: Any) -> Capabilities:
    """Ask a backend pair (the async one may be None) what it can do."""
    stats = getattr(backend, "stats", None)
    reader = getattr(backend, "reader", None)
    return Capabilities(
        local=bool(getattr(backend, "local", False)),
        scripts=_offered(backend, "scripts"),
        ascripts=_offered(async_backend, "scripts"),
        wakeups=_offered(backend, "wakeups"),
        awakeups=_offered(async_backend, "wakeups"),
        streams=_offered(backend, "streams"),
        astreams=_offered(async_backend, "streams"),
        scan=_offered(backend, "scan"),
        ascan=_offered(async_backend, "scan"),
        stats=stats if callable(stats) else None,
        reader=reader if callable(reader) else None,
        decoding_reader=getattr(backend, "decoding_reader", None),
        local_state=_offered(backend, "local_state"),
        watch_key=getattr(backend, "watch_key", None),
        tombstones=_offered(backend, "tombstones"),
        atombstones=_offered(async_backend, "tombstones"),
    )
