"""The HTTP cache driver for async callers.

This file is the source: ``cachekit/http/_sync_driver.py`` is generated from it by
``scripts/unasync.py`` (CI fails when they drift). Edit here, then run the script.

:mod:`cachekit.http` decides everything (what is cacheable, keys, headers, 304s); the
driver only reads and writes its bytes through a :class:`cachekit.Cache` and coalesces
concurrent cold requests: single-flight per key in this process (the flights of
:mod:`cachekit.core.concurrency`), and across processes with ``cache.lock`` when the backend
is remote. State and invalidation are shared, in :class:`cachekit.http.HttpCache`.
No web framework is imported here.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any, TypeVar

from .._cache import Cache
from ..core.concurrency import AsyncFlights
from ..exceptions import CacheKitError
from ._shared import AsyncDecided, AsyncForwarder, AsyncHitHandler, HttpCache, Probe
from .rules import (
    CachedResponse,
    Forward,
    Hit,
    HttpCachePolicy,
    Read,
    Request,
    StoreDecision,
    begin,
    invalidation_key,
    miss_reason,
    serve,
)

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from ._shared import CoalesceOptions

__all__ = ["AsyncHttpCache", "Handoff", "adecided_nothing"]

logger = logging.getLogger(__name__)
T = TypeVar("T")
Found = tuple[Hit | Forward, str | None]  # lookup(): a hit, or where to go and the key read


async def adecided_nothing(entry: CachedResponse | None) -> None:
    """A ``decided`` for a request no other waits on: there is nothing to release."""
    return None


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

    def __init__(self, decided: AsyncDecided) -> None:
        self.decided = decided
        self.claimed = False

    def claim(self) -> AsyncDecided:
        self.claimed = True
        return self.decided


class AsyncHttpCache(HttpCache):
    """The driver for async callers; concurrent requests for a cold key coalesce."""

    def __init__(
        self, cache: Cache, policy: HttpCachePolicy, **options: Unpack[CoalesceOptions]
    ) -> None:
        super().__init__(cache, policy, **options)
        # in flight by key; ``landed`` counts the flights finished so far: a request whose
        # read missed may reach the table after the leader stored the entry and left, and
        # a changed count sends it back to the cache before it runs the app again
        self._flights = AsyncFlights()

    def _all_flights(self) -> list[Any]:
        return self._flights.in_progress()

    async def _aget(self, key: str) -> bytes | None:
        try:
            value = await self.cache.aget(key)
        except CacheKitError as exc:  # on_error="raise": still never fail the request
            logger.warning("HTTP cache read failed: %s", exc)
            return None
        return value if isinstance(value, bytes) else None

    async def alookup(self, req: Request, policy: HttpCachePolicy) -> Found:
        """Run the reads for ``req``: a hit, or where to go (and the key that missed)."""
        step: Read | Hit | Forward = begin(req, policy)
        key = None
        while isinstance(step, Read):
            key = step.key
            step = step.feed(await self._aget(key), time.time())
        return step, key

    async def aprobe(self, req: Request, policy: HttpCachePolicy) -> Probe:
        """:meth:`alookup`, remembering what :meth:`arun` needs to pick it up later."""
        landed = self._flights.landed
        step, key = await self.alookup(req, policy)
        return step, key, landed

    async def astore(self, decision: StoreDecision) -> None:
        writes = decision.writes()
        tags = decision.tags or None
        try:
            if len(writes) == 1:
                key, data, ttl = writes[0]
                await self.cache.aset(key, data, ttl, tags=tags)
            else:  # a Vary marker and its variant: one round trip
                items = {key: data for key, data, _ in writes}
                await self.cache.aset_many(items, writes[0][2], tags=tags)
        except CacheKitError as exc:
            logger.warning("HTTP cache write failed: %s", exc)

    async def asettle(self, store: StoreDecision | None, decided: AsyncDecided) -> None:
        """Store what ``store`` says (nothing if None), then release the flight with the
        entry stored (``decided``, as :meth:`arun` hands it to ``forward``)."""
        if store is not None:
            await self.astore(store)
        await decided(None if store is None else store.entry)

    async def ainvalidate_unsafe(self, step: Forward, status: int) -> None:
        """After the app answered ``step``'s request: a successful unsafe request (POST,
        PUT, DELETE...) drops the stored response of its URL (RFC 9111 section 4.4)."""
        key = invalidation_key(step.request, status, step.policy.key_prefix)
        if key is not None:
            await self.adelete(key)

    async def adelete(self, key: str) -> bool:
        try:
            return await self.cache.adelete(key)
        except CacheKitError as exc:
            logger.warning("HTTP cache delete failed: %s", exc)
            return False

    async def _alock(self, key: str) -> tuple[Any, bool]:
        """(held lock or None, whether we waited for another process)."""
        if not self.use_lock or self._circuit_open():
            return None, False
        lock = self.cache.lock(key, ttl=self.lock_ttl)
        try:
            if await lock.aacquire(blocking=False):
                return lock, False
            self.lock_waits += 1
            try:
                await lock.aacquire(blocking=True, timeout=self.wait_timeout)
            except CacheKitError:  # timed out: the other process is slow; go ahead
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

    async def arun(
        self,
        req: Request,
        policy: HttpCachePolicy,
        on_hit: AsyncHitHandler[T],
        forward: AsyncForwarder[T],
        probed: Probe | None = None,
        *,
        deferred: bool = False,
        joined: AsyncDecided | None = None,
    ) -> T:
        """Answer ``req`` from the cache (``on_hit``) or the app (``forward``).

        ``forward(step, decided)`` must call ``decided(entry or None)`` as soon as it
        knows whether the response is stored (after storing it): followers waiting on
        the same key are released then, not when a long body has been sent; later calls
        do nothing. ``probed``: an :meth:`aprobe` of ``req`` already made (its read is
        not repeated). ``deferred``: the decision is made after ``forward`` returns (by a
        framework hook that sees the final response); ``forward`` hands ``decided`` on,
        and the flight stays open until it is called (``arun`` resolves it only if
        ``forward`` raises). ``joined``: a claimed :class:`Handoff`'s ``decided``: an
        outer layer leads this request's flight, so nothing is coordinated here and what
        this layer decides (its hit's entry, or what ``forward`` stores) resolves the
        outer flight.
        """
        step, key, landed = await self.aprobe(req, policy) if probed is None else probed
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
        if key is None or not step.may_store or not self.coalesce or req.method.upper() != "GET":
            return await forward(step, adecided_nothing)
        flights = self._flights
        flight, leader = flights.join(key)
        if not leader:
            entry, now = await flight.aresult(self.wait_timeout), time.time()
            if isinstance(entry, CachedResponse) and miss_reason(entry, req, now, policy) is None:
                return await on_hit(serve(entry, req, now, policy.cache_name))
            return await forward(step, adecided_nothing)
        # a flight finished since our read: it may have stored what we missed
        recheck = flights.landed != landed
        held: list[Any] = []
        settled = False

        async def decided(entry: CachedResponse | None) -> None:
            nonlocal settled
            if settled:
                return
            settled = True
            flight.finish(entry)
            flights.leave(key, flight)
            while held:
                await self._arelease(held.pop())

        try:
            lock, waited = await self._alock(key)
            if lock is not None:
                held.append(lock)
            # Read again before calling the app when another request's flight landed since
            # our read, or when we hold the cross-process lock: another process may have
            # stored the response and released the lock between our read and our lock.
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

    # -- invalidation (errors are raised: the caller asked for it) ------------------------
    async def ainvalidate_url(self, url: str) -> bool:
        """Drop the stored response (and its Vary variants) for an absolute URL."""
        return await self.cache.adelete(self.url_key(url))

    async def ainvalidate_path(self, pattern: str, host: str | None = None) -> int:
        """Drop every stored response whose path matches a ``*`` pattern; the number.

        Responses to URLs too long for a readable key (over 200 characters) are found by
        tag, by host and first path segment: the pattern drops each one it may cover."""
        globs = self.path_globs(pattern, host)  # a bad pattern raises before any delete
        total = 0
        for glob in globs:
            total += await self.cache.adelete_pattern(glob)
        return total + await self.ainvalidate_tags(self.path_tag(pattern, host))

    async def ainvalidate_tags(self, *tags: str) -> int:
        """Drop every stored response tagged (``Cache-Tag``) with any of ``tags``."""
        return int(await self._tags_method("ainvalidate_tags")(*tags))
