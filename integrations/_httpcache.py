"""The I/O around :mod:`cachekit.http` that the Starlette and Flask adapters share.

:mod:`cachekit.http` decides everything (what is cacheable, keys, headers, 304s); this
module only reads and writes its bytes through a :class:`cachekit.Cache`, coalesces
concurrent cold requests (single-flight per key in this process, and across processes
with ``cache.lock`` when the backend is remote), and invalidates by URL, path pattern and
tag. No web framework is imported here.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import weakref
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar
from urllib.parse import urlsplit

from cachekit import Cache, CacheKitError, ConfigurationError
from cachekit.http import (
    CachedResponse,
    Forward,
    Hit,
    HttpCachePolicy,
    Read,
    Request,
    Response,
    StoreDecision,
    begin,
    miss_reason,
    path_globs,
    path_purge_tag,
    primary_key,
    serve,
)

__all__ = [
    "AsyncHttpCache",
    "Handoff",
    "HttpCache",
    "SyncHttpCache",
    "bytes_cache",
    "make_policy",
]

logger = logging.getLogger(__name__)

T = TypeVar("T")
Decided = Callable[[CachedResponse | None], None]
Probe = tuple[Hit | Forward, str | None, int]  # SyncHttpCache.probe: step, key read, landed
_PROBE = b"\x00\xffcachekit" * 64


def _stores_bytes(cache: Cache) -> bool:
    """Whether ``cache`` keeps bytes exactly and compactly (not base64 inside JSON)."""
    serializer = cache.serializer
    if serializer is None:  # the memory backend keeps objects as they are
        return True
    try:
        data = serializer.dumps(_PROBE)
        return len(data) <= len(_PROBE) + 64 and bool(serializer.loads(data) == _PROBE)
    except Exception:
        return False


def bytes_cache(cache: Cache) -> Cache:
    """A cache that stores HTTP entries (bytes) in ``cache``'s backend and namespace.

    ``cache`` itself when it keeps bytes as they are, give or take a header (memory, or
    a ``raw``, ``msgpack`` or signed ``pickle`` serializer); otherwise (``orjson``,
    ``json``, ...: bytes are base64 in JSON, or refused) a sibling over the same backend
    objects and namespace with the ``raw`` serializer, so a hit is still one ``GET`` of
    the entry as it is, and tags and ``clear()`` still cover the entries.
    """
    if _stores_bytes(cache):
        return cache
    return cache.with_options(serializer="raw")


def make_policy(
    policy: HttpCachePolicy | None = None, ttl: float | object | None = ..., **options: Any
) -> HttpCachePolicy:
    """An :class:`HttpCachePolicy` from a base (default: the module's) and overrides.

    ``ttl`` is the policy's ``default_ttl``: the lifetime of a response that states no
    freshness of its own (None: store only responses that do).
    """
    base = policy or HttpCachePolicy()
    fields = {name: getattr(base, name) for name in base.__dataclass_fields__}
    if ttl is not ...:
        fields["default_ttl"] = ttl
    unknown = set(options) - set(fields)
    if unknown:
        raise ConfigurationError(f"unknown HTTP cache option(s): {', '.join(sorted(unknown))}")
    fields.update(options)
    return HttpCachePolicy(**fields)


def decode_path(raw: bytes) -> str:
    """A raw request target part as text: UTF-8 when it is, else byte for byte (latin-1)."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


class _Flight:
    """One cold key being computed in this process; followers wait for its entry."""

    __slots__ = ("entry", "event", "waiters")

    def __init__(self) -> None:
        self.event = threading.Event()
        self.entry: CachedResponse | None = None
        self.waiters = 0  # followers parked on it (for tests and introspection)

    def resolve(self, entry: CachedResponse | None) -> None:
        if not self.event.is_set():
            self.entry = entry
            self.event.set()


class _AsyncFlight:
    __slots__ = ("entry", "event", "waiters")

    def __init__(self) -> None:
        self.event = asyncio.Event()
        self.entry: CachedResponse | None = None
        self.waiters = 0

    def resolve(self, entry: CachedResponse | None) -> None:
        if not self.event.is_set():
            self.entry = entry
            self.event.set()


class Handoff:
    """An outer cache layer's flight, offered to a cache layer nested inside it.

    Layers nest (an app-wide middleware and a per-route decorator over the same URL): if
    both coordinated, the inner one would wait for the lock the outer one holds for this
    very request (the whole ``wait_timeout``), and both would add ``Cache-Status``. So
    the outer layer offers its flight before calling the app; the innermost layer claims
    it, answers (hit, or forward and store, by its own policy) without a flight or lock
    of its own, and resolves the outer flight through ``decided``; the outer layer sees
    the claim and passes the response on untouched.
    """

    __slots__ = ("claimed", "decided")

    def __init__(self, decided: Callable[[CachedResponse | None], Awaitable[None]]) -> None:
        self.decided = decided
        self.claimed = False

    def claim(self) -> Callable[[CachedResponse | None], Awaitable[None]]:
        self.claimed = True
        return self.decided


class HttpCache:
    """State and invalidation shared by the sync and async drivers.

    ``lock``: also coalesce across processes with ``cache.lock`` (default: when the
    cache has locks and a remote backend). ``lock_ttl`` bounds how long a crashed leader
    blocks others; ``wait_timeout`` how long a follower waits before calling the app itself.
    """

    def __init__(
        self,
        cache: Cache,
        policy: HttpCachePolicy,
        *,
        lock: bool | None = None,
        lock_ttl: float = 30.0,
        wait_timeout: float = 10.0,
    ) -> None:
        self.user_cache = cache
        self.cache = bytes_cache(cache)
        self.policy = policy
        has_lock = callable(getattr(self.cache, "lock", None))
        remote = self.cache.stats().get("backend") != "memory"
        self.use_lock = has_lock and remote if lock is None else bool(lock) and has_lock
        self.lock_ttl = lock_ttl
        self.wait_timeout = wait_timeout
        self.lock_waits = 0  # times a request blocked on another's cross-process lock

    def followers(self) -> int:
        """How many requests are waiting for another one's response right now."""
        return sum(flight.waiters for flight in self._all_flights())

    def _all_flights(self) -> list[Any]:
        raise NotImplementedError

    def _circuit_open(self) -> bool:
        return bool(self.cache.stats().get("circuit") == "open")

    # -- invalidation: the pure part -----------------------------------------------
    def url_key(self, url: str) -> str:
        """The cache key of the GET response for an absolute URL (``https://h/p?q``)."""
        parts = urlsplit(url)
        if not parts.scheme or not parts.netloc:
            raise ValueError(f"invalidate_url needs an absolute URL, not {url!r}")
        req = Request("GET", parts.scheme, parts.netloc, parts.path or "/", parts.query)
        return primary_key(req, self.policy.key_prefix)

    def path_globs(self, pattern: str, host: str | None = None) -> list[str]:
        """Globs over the cache keys for a path pattern (``*`` matches anything, including
        ``/``, a query string and Vary variants). Without ``host``, every host matches."""
        return path_globs(pattern, host, self.policy.key_prefix)

    def path_tag(self, pattern: str, host: str | None = None) -> str:
        """The tag of the entries with hashed keys (long URLs) the pattern may cover."""
        return path_purge_tag(pattern, host, self.policy.key_prefix)

    # -- invalidation, blocking (both drivers) -------------------------------------------
    def invalidate_url(self, url: str) -> bool:
        """Drop the stored response (and its Vary variants) for an absolute URL."""
        return self.cache.delete(self.url_key(url))

    def invalidate_path(self, pattern: str, host: str | None = None) -> int:
        """Drop every stored response whose path matches a ``*`` pattern; the number.

        Responses to URLs too long for a readable key (over 200 characters) are found by
        tag, by host and first path segment: the pattern drops each one it may cover."""
        globs = self.path_globs(pattern, host)  # a bad pattern raises before any delete
        total = sum(self.cache.delete_pattern(glob) for glob in globs)
        return total + self.invalidate_tags(self.path_tag(pattern, host))

    def invalidate_tags(self, *tags: str) -> int:
        """Drop every stored response tagged (``Cache-Tag``) with any of ``tags``."""
        return int(self._tags_method("invalidate_tags")(*tags))

    def _tags_method(self, name: str) -> Callable[..., Any]:
        method = getattr(self.cache, name, None)
        if method is None:
            raise NotImplementedError(
                "invalidation by tag needs Cache.invalidate_tags, which this cachekit lacks"
            )
        return method  # type: ignore[no-any-return]


class SyncHttpCache(HttpCache):
    """The driver for WSGI adapters: blocking backend calls, threads coalesce on a key."""

    def __init__(self, cache: Cache, policy: HttpCachePolicy, **options: Any) -> None:
        super().__init__(cache, policy, **options)
        self._flights: dict[str, _Flight] = {}
        self._flights_lock = threading.Lock()
        # Flights finished so far. A request whose read missed may reach the flight table
        # after the leader stored the entry and left: a changed count sends it back to
        # the cache before it runs the app again.
        self._landed = 0

    def _all_flights(self) -> list[Any]:
        with self._flights_lock:
            return list(self._flights.values())

    def _get(self, key: str) -> bytes | None:
        try:
            value = self.cache.get(key)
        except CacheKitError as exc:  # on_error="raise": still never fail the request
            logger.warning("HTTP cache read failed: %s", exc)
            return None
        return value if isinstance(value, bytes) else None

    def lookup(self, req: Request, policy: HttpCachePolicy) -> tuple[Hit | Forward, str | None]:
        """Run the reads for ``req``: a hit, or where to go (and the key that missed)."""
        step: Read | Hit | Forward = begin(req, policy)
        key = None
        while isinstance(step, Read):
            key = step.key
            step = step.feed(self._get(key), time.time())
        return step, key

    def probe(self, req: Request, policy: HttpCachePolicy) -> Probe:
        """:meth:`lookup`, remembering what :meth:`run` needs to pick it up later."""
        landed = self._landed
        step, key = self.lookup(req, policy)
        return step, key, landed

    def store(self, decision: StoreDecision) -> None:
        writes = decision.writes()
        tags = decision.tags or None
        try:
            if len(writes) == 1:
                key, data, ttl = writes[0]
                self.cache.set(key, data, ttl, tags=tags)
            else:  # a Vary marker and its variant: one round trip
                self.cache.set_many({key: data for key, data, _ in writes}, writes[0][2], tags=tags)
        except CacheKitError as exc:
            logger.warning("HTTP cache write failed: %s", exc)

    def delete(self, key: str) -> bool:
        try:
            return self.cache.delete(key)
        except CacheKitError as exc:
            logger.warning("HTTP cache delete failed: %s", exc)
            return False

    def _lock(self, key: str) -> tuple[Any, bool]:
        """(held lock or None, whether we waited for another process)."""
        if not self.use_lock or self._circuit_open():
            return None, False
        lock = self.cache.lock(key, ttl=self.lock_ttl)
        try:
            if lock.acquire(blocking=False):
                return lock, False
            self.lock_waits += 1
            try:
                lock.acquire(blocking=True, timeout=self.wait_timeout)
            except CacheKitError:  # timed out: the other process is slow; go ahead
                return None, True
            return lock, True
        except CacheKitError as exc:
            logger.warning("HTTP cache lock failed: %s", exc)
            return None, False

    @staticmethod
    def _release(lock: Any) -> None:
        try:
            lock.release()
        except CacheKitError as exc:
            logger.warning("HTTP cache lock release failed: %s", exc)

    def run(
        self,
        req: Request,
        policy: HttpCachePolicy,
        on_hit: Callable[[Response], T],
        forward: Callable[[Forward, Decided], T],
        probed: Probe | None = None,
        *,
        deferred: bool = False,
    ) -> T:
        """Answer ``req`` from the cache (``on_hit``) or the app (``forward``).

        ``forward(step, decided)`` must call ``decided(entry or None)`` as soon as it
        knows whether the response is stored (after storing it): followers waiting on
        the same key are released then, not when a long body has been sent. ``probed``:
        a :meth:`probe` of ``req`` already made (its read is not repeated).
        ``deferred``: the decision is made after ``forward`` returns (by a framework
        hook that sees the final response); ``forward`` hands ``decided`` on, and the
        flight stays open until it is called (``run`` resolves it only if ``forward``
        raises).
        """
        step, key, landed = self.probe(req, policy) if probed is None else probed
        if isinstance(step, Hit):
            return on_hit(step.response)
        if key is None or not step.may_store or req.method.upper() != "GET":
            return forward(step, _ignore)
        with self._flights_lock:
            flight = self._flights.get(key)
            leader = flight is None
            if flight is None:
                flight = self._flights[key] = _Flight()
            else:
                flight.waiters += 1
            # a flight finished since our read: it may have stored what we missed
            recheck = self._landed != landed
        if not leader:
            flight.event.wait(self.wait_timeout)
            entry, now = flight.entry, time.time()
            if entry is not None and miss_reason(entry, req, now) is None:
                return on_hit(serve(entry, req, now, policy.cache_name))
            return forward(step, _ignore)

        held: list[Any] = []

        def decided(entry: CachedResponse | None) -> None:
            flight.resolve(entry)
            with self._flights_lock:
                if self._flights.get(key) is flight:
                    del self._flights[key]
                    self._landed += 1
            while held:
                self._release(held.pop())

        try:
            lock, waited = self._lock(key)
            if lock is not None:
                held.append(lock)
            # Read again before calling the app when another thread's flight landed since
            # our read, or when we hold the cross-process lock: another process may have
            # stored the response and released the lock between our read and our lock.
            if recheck or waited or lock is not None:
                again, _ = self.lookup(req, policy)
                if isinstance(again, Hit):
                    decided(again.entry)
                    return on_hit(again.response)
            return forward(step, decided)
        except BaseException:
            decided(None)
            raise
        finally:
            if not deferred:
                decided(None)


class AsyncHttpCache(HttpCache):
    """The driver for ASGI adapters: awaited backend calls, tasks coalesce on a key."""

    def __init__(self, cache: Cache, policy: HttpCachePolicy, **options: Any) -> None:
        super().__init__(cache, policy, **options)
        # asyncio primitives belong to one loop (test clients may run several)
        self._flights: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, dict[str, _AsyncFlight]
        ] = weakref.WeakKeyDictionary()
        self._landed = 0  # flights finished so far: see SyncHttpCache

    def _all_flights(self) -> list[Any]:
        return [flight for table in list(self._flights.values()) for flight in table.values()]

    async def _aget(self, key: str) -> bytes | None:
        try:
            value = await self.cache.aget(key)
        except CacheKitError as exc:
            logger.warning("HTTP cache read failed: %s", exc)
            return None
        return value if isinstance(value, bytes) else None

    async def alookup(
        self, req: Request, policy: HttpCachePolicy
    ) -> tuple[Hit | Forward, str | None]:
        step: Read | Hit | Forward = begin(req, policy)
        key = None
        while isinstance(step, Read):
            key = step.key
            step = step.feed(await self._aget(key), time.time())
        return step, key

    async def astore(self, decision: StoreDecision) -> None:
        writes = decision.writes()
        tags = decision.tags or None
        try:
            if len(writes) == 1:
                key, data, ttl = writes[0]
                await self.cache.aset(key, data, ttl, tags=tags)
            else:
                items = {key: data for key, data, _ in writes}
                await self.cache.aset_many(items, writes[0][2], tags=tags)
        except CacheKitError as exc:
            logger.warning("HTTP cache write failed: %s", exc)

    async def adelete(self, key: str) -> bool:
        try:
            return await self.cache.adelete(key)
        except CacheKitError as exc:
            logger.warning("HTTP cache delete failed: %s", exc)
            return False

    async def _alock(self, key: str) -> tuple[Any, bool]:
        if not self.use_lock or self._circuit_open():
            return None, False
        lock = self.cache.lock(key, ttl=self.lock_ttl)
        try:
            if await lock.aacquire(blocking=False):
                return lock, False
            self.lock_waits += 1
            try:
                await lock.aacquire(blocking=True, timeout=self.wait_timeout)
            except CacheKitError:
                return None, True
            return lock, True
        except CacheKitError as exc:
            logger.warning("HTTP cache lock failed: %s", exc)
            return None, False

    @staticmethod
    async def _arelease(lock: Any) -> None:
        try:
            await lock.arelease()
        except CacheKitError as exc:
            logger.warning("HTTP cache lock release failed: %s", exc)

    def _table(self) -> dict[str, _AsyncFlight]:
        loop = asyncio.get_running_loop()
        table = self._flights.get(loop)
        if table is None:
            table = self._flights[loop] = {}
        return table

    async def arun(
        self,
        req: Request,
        policy: HttpCachePolicy,
        on_hit: Callable[[Response], Awaitable[T]],
        forward: Callable[
            [Forward, Callable[[CachedResponse | None], Awaitable[None]]], Awaitable[T]
        ],
        *,
        deferred: bool = False,
        joined: Callable[[CachedResponse | None], Awaitable[None]] | None = None,
    ) -> T:
        """:meth:`SyncHttpCache.run` for coroutines (``decided`` is awaited).

        ``joined``: a claimed :class:`Handoff`'s ``decided``: an outer layer leads this
        request's flight, so nothing is coordinated here and what this layer decides
        (its hit's entry, or what ``forward`` stores) resolves the outer flight.
        """
        landed = self._landed
        step, key = await self.alookup(req, policy)
        if joined is not None:
            if isinstance(step, Hit):
                await joined(step.entry)
                return await on_hit(step.response)
            try:
                return await forward(step, joined)
            except BaseException:
                await joined(None)
                raise
        if isinstance(step, Hit):
            return await on_hit(step.response)
        if key is None or not step.may_store or req.method.upper() != "GET":
            return await forward(step, _aignore)
        table = self._table()
        flight = table.get(key)
        if flight is not None:
            flight.waiters += 1
            try:
                await asyncio.wait_for(flight.event.wait(), self.wait_timeout)
            except asyncio.TimeoutError:
                pass
            entry, now = flight.entry, time.time()
            if entry is not None and miss_reason(entry, req, now) is None:
                return await on_hit(serve(entry, req, now, policy.cache_name))
            return await forward(step, _aignore)
        flight = table[key] = _AsyncFlight()
        # a flight finished while our read was awaited: it may have stored what we missed
        recheck = self._landed != landed
        held: list[Any] = []

        async def decided(entry: CachedResponse | None) -> None:
            flight.resolve(entry)
            if table.get(key) is flight:
                del table[key]
                self._landed += 1
            while held:
                await self._arelease(held.pop())

        try:
            lock, waited = await self._alock(key)
            if lock is not None:
                held.append(lock)
            # as in SyncHttpCache.run: read again if a flight landed since our read, or
            # if we hold the cross-process lock (another process may just have stored)
            if recheck or waited or lock is not None:
                again, _ = await self.alookup(req, policy)
                if isinstance(again, Hit):
                    await decided(again.entry)
                    return await on_hit(again.response)
            return await forward(step, decided)
        except BaseException:
            await decided(None)
            raise
        finally:
            if not deferred:
                await decided(None)

    # -- invalidation -----------------------------------------------------------------
    async def ainvalidate_url(self, url: str) -> bool:
        return await self.adelete(self.url_key(url))

    async def ainvalidate_path(self, pattern: str, host: str | None = None) -> int:
        globs = self.path_globs(pattern, host)
        total = 0
        for glob in globs:
            total += await self.cache.adelete_pattern(glob)
        return total + await self.ainvalidate_tags(self.path_tag(pattern, host))

    async def ainvalidate_tags(self, *tags: str) -> int:
        return int(await self._tags_method("ainvalidate_tags")(*tags))


def _ignore(entry: CachedResponse | None) -> None:
    return None


async def _aignore(entry: CachedResponse | None) -> None:
    return None


def header_pairs(raw: Iterable[tuple[bytes, bytes]]) -> list[tuple[str, str]]:
    """ASGI/raw header pairs as text (latin-1, as cachekit.http expects)."""
    return [(name.decode("latin-1"), value.decode("latin-1")) for name, value in raw]


def caching_headers_from(
    final: Iterable[tuple[str, str]], view: Iterable[tuple[str, str]], policy: HttpCachePolicy
) -> list[tuple[str, str]]:
    """A view's response headers with the *final* response's say on caching (after the
    framework's hooks or middleware ran on it): the final Cache-Control, Expires and
    Pragma, and the union of both responses' Vary and tag headers.

    For adapters that store what the view returned (hits are handed back to the
    framework, whose hooks then run on them as on a miss) while what the hooks declared
    about caching (``private``, ``max-age``, a Vary) must rule the entry.
    """
    final, view = list(final), list(view)
    tag = policy.tag_header.lower()
    replaced = {"cache-control", "expires", "pragma"}
    headers = [
        (name, value) for name, value in view if name.lower() not in {*replaced, "vary", tag}
    ]
    headers += [(name, value) for name, value in final if name.lower() in replaced]
    for joined, spelling in (("vary", "Vary"), (tag, policy.tag_header)):
        items = {
            item.strip().lower(): item.strip()
            for name, value in (*view, *final)
            if name.lower() == joined
            for item in value.split(",")
            if item.strip()
        }
        if items:
            headers.append((spelling, ", ".join(items.values())))
    return headers
