"""Stampede protection for async callers: single flight, the Redis lock, stale serving.

This file is the source: ``cachekit/stampede/_sync_stampede.py`` is generated from it by
``scripts/unasync.py`` (CI fails when they drift). Edit here, then run the script.
Decisions (fresh, stale, XFetch, who waits) are in :mod:`cachekit.stampede.rules`; the
thread/loop primitives in :mod:`cachekit.core.concurrency`; Redis commands in
:mod:`cachekit.stampede._async_coordination`. One instance serves one decorated function (or one
``get_or_set`` call) and is built once, so the per-call work is only what the options ask.
"""

from __future__ import annotations

import logging
import random
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from ..core.concurrency import ABANDONED, AsyncFlights, _aresolve, _asleep
from ..core.sentinel import MISSING
from ..exceptions import SerializationError
from ..leases.rules import MARK_LIFETIME, Lease, note_unserved
from ..tags.rules import tag_list
from ._async_coordination import ACQUIRED, VALUE, coordinator_for
from .rules import (
    Freshness,
    StampedeOptions,
    classify,
    companion_key,
    entry_meta,
    may_serve_on_error,
    physical_ttl,
    wait_slice,
)

__all__ = ["AsyncStampede"]

logger = logging.getLogger(__name__)

TagsOf = Callable[[tuple[Any, ...], Mapping[str, Any]], Iterable[str]]


class _Found:
    """A value found in the cache with its metadata (kept as the stale fallback)."""

    __slots__ = ("meta", "raw", "read_at", "value")

    def __init__(
        self, value: Any, meta: dict[str, Any] | None, read_at: float = 0.0, raw: Any = None
    ) -> None:
        self.value = value
        self.meta = meta
        self.read_at = read_at  # time.monotonic() just before the read
        self.raw = raw  # the entry as stored (with metadata only)


class AsyncStampede:
    def __init__(
        self, cache: Any, options: StampedeOptions, should_store: Callable[[Any], bool]
    ) -> None:
        self.cache = cache
        self.options = options
        self.should_store = should_store
        # how an unstorable value is reported (@cached sets its own: once per function)
        self.unencodable: Callable[[str, SerializationError], bool] = cache._unencodable
        # the cache's computations in progress, shared by its functions (FlightTables)
        self.flights: AsyncFlights = cache._flights.async_flights
        self.refreshing: AsyncFlights = cache._flights.async_refreshing
        self.coordinator = coordinator_for(cache._ascripts, cache._awakeups)
        # remote backend + lock: concurrent callers share even the lookup (one GET per
        # process for a burst); in-process backends look up first (a hit is a dict read)
        self.coalesce = options.lock and self.coordinator is not None
        self.clock = time.time
        self.rand = random.random
        # when each key's last background refresh finished (monotonic): a stale read made
        # before that must not start another refresh of what was just stored
        self.landed: dict[str, float] = {}

    def _ns_text(self, key: str) -> str:
        """The namespace text of the entry ``key``'s generation (its companions' head)."""
        text: str = self.cache._generation.text_of(key)
        return text

    # -- the entry point ----------------------------------------------------------------
    async def aget(
        self,
        key: str,
        func: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: Mapping[str, Any],
        ttl: Any,
        tags_of: TagsOf,
    ) -> Any:
        """The value for ``key``: cached, stale, or ``func(*args, **kwargs)`` stored."""
        call = (func, args, kwargs, ttl, tags_of)
        stale = None
        if not self.coalesce:
            found = await self._alookup(key)
            if found is not None:
                if self._serve(key, found, call):
                    return found.value
                stale = found
        if self.options.lock:
            return await self._asingle_flight(key, call, stale)
        return await self._acompute_and_store(key, call, stale)

    # -- reading -----------------------------------------------------------------------
    async def _alookup(self, key: str) -> _Found | None:
        read_at = time.monotonic()
        if not self.options.uses_meta:
            value = await self.cache._alookup(key)
            return None if value is MISSING else _Found(value, None, read_at)
        found = await self.cache._alookup_meta(key)
        return None if found is MISSING else _Found(found[0], found[1], read_at, found[2])

    def _serve(self, key: str, found: _Found, call: tuple[Any, ...]) -> bool:
        """Whether ``found`` answers the call (starting a background refresh if due)."""
        if found.meta is None:
            return True
        state = classify(found.meta, self.clock(), self.options, self.rand())
        if state is Freshness.FRESH:
            return True
        if state is Freshness.EXPIRED:  # a load stores over it (kept for stale_if_error)
            note_unserved(self.cache._atombstones, key, found.raw)
            return False
        if state is Freshness.STALE:
            self.cache.counters.stale += 1
        if self.landed.get(key, -1.0) < found.read_at:  # else: refreshed since our read
            self._refresh_in_background(key, call)
        return True

    def _decode(self, key: str, entry: bytes) -> Any:
        """A value another process computed (its entry bytes), or MISSING if unreadable."""
        try:
            return self.cache._codec.loads(entry, key)
        except Exception as exc:
            note_unserved(self.cache._atombstones, key, entry)  # a load stores over it
            return self.cache._corrupt(key, exc)

    # -- one computation per key ---------------------------------------------------------
    async def _asingle_flight(self, key: str, call: tuple[Any, ...], stale: _Found | None) -> Any:
        flight, leader = self.flights.join(key)
        if not leader:
            self.cache.counters.joins += 1
            value = await flight.aresult(self.options.wait_timeout)
            if value is ABANDONED:
                # the leader was interrupted: start over (the first of us to rejoin leads;
                # the others find its value, stored or in flight)
                return await self.aget(key, *call)
            if value is MISSING:  # waited long enough: compute ourselves (never deadlock)
                # the late leader's lease ends here, so its older result cannot overwrite
                # ours (in process; on Redis its store never overwrites: SET NX)
                self.cache._aleases.fence([key])
                return await self._acompute_and_store(key, call, stale)
            return value
        try:
            value = await self._alead(key, call, stale)
        except BaseException as exc:
            # leave before waking the followers, so that a follower rejoining after an
            # abandoned flight finds the table free and leads the next one
            self.flights.leave(key, flight)
            flight.fail(exc)  # the function's exception is shared; a cancellation is not
            raise
        self.flights.leave(key, flight)
        flight.finish(value)
        return value

    async def _alead(self, key: str, call: tuple[Any, ...], stale: _Found | None) -> Any:
        if self.coalesce:
            found = await self._alookup(key)
            if found is not None:
                if self._serve(key, found, call):
                    return found.value
                stale = found
        coordinator = self.coordinator
        if coordinator is None or self.cache._breaker.open:
            # no backend (or skipping it during an outage: a lock holder's value from
            # before an invalidation this process has not delivered yet must not be taken)
            return await self._acompute_and_store(key, call, stale)
        options = self.options
        lock_key = companion_key(self._ns_text(key), "lock", key)
        token = uuid.uuid4().hex.encode()
        deadline = time.monotonic() + options.wait_timeout
        socket_timeout = coordinator.socket_timeout()
        waited = False
        while True:
            try:
                kind, payload = await coordinator.abegin(
                    key, lock_key, token, options.lock_ttl, recheck=stale is None
                )
            except Exception as exc:  # Redis failing: compute without the lock (fail open)
                self.cache._failed(exc, None)
                break
            if kind == VALUE:
                value = self._decode(key, payload)
                if value is not MISSING:
                    return value
                break
            if kind == ACQUIRED:  # payload: what the key held, our lease
                return await self._ahold(key, call, stale, Lease(0.0, lock_key, token, payload))
            done_key = companion_key(self._ns_text(key), "done:" + payload.decode(), key)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            slice_ = wait_slice(remaining, socket_timeout)
            if not waited:
                waited = True
                self.cache.counters.lock_waits += 1
            started = time.monotonic()
            try:
                outcome = await coordinator.await_done(done_key, slice_)
            except Exception as exc:
                self.cache._failed(exc, None)
                break
            if outcome is None:
                if time.monotonic() - started < slice_ / 2:
                    # a server that does not block (fakeredis): do not spin on it
                    await _asleep(slice_)
                continue  # ask again: the holder may have died and its lock expired
            if outcome[:1] == b"v":
                value = self._decode(key, outcome[1:])
                if value is not MISSING:
                    return value
            break  # the holder failed: compute (or serve stale on error) ourselves
        return await self._acompute_and_store(key, call, stale)

    async def _ahold(
        self, key: str, call: tuple[Any, ...], stale: _Found | None, lease: Lease
    ) -> Any:
        """We hold the Redis lock: compute, store (while our lease holds: the lock still
        holds our token, no invalidation since we took it), release, wake the waiters."""
        func, args, kwargs, ttl, tags_of = call
        lease.since = time.monotonic()
        try:
            value, delta = await self._atimed(func, args, kwargs)
        except BaseException:
            await self._afinish(key, lease, b"e", b"", False, None)
            if stale is not None and self._may_serve_on_error(stale):
                return stale.value
            raise
        tags = tags_of(args, kwargs)
        await self._astore_and_finish(key, lease, value, delta, ttl, tags)
        return value

    async def _afinish(
        self,
        key: str,
        lease: Lease,
        outcome: bytes,
        entry: bytes,
        store: bool,
        seconds: float | None,
    ) -> None:
        """Store (only while ``lease`` holds), release the lock, wake the waiters."""
        assert self.coordinator is not None and lease.lock_key and lease.token
        if self.cache._breaker.open:
            # the outage's invalidations are not delivered yet: store nothing (the lock
            # expires on its own, its waiters time out and compute)
            self.cache._skip(None)
            return
        token = lease.token
        done_key = companion_key(self._ns_text(key), "done:" + token.decode(), key)
        if store and time.monotonic() - lease.since >= MARK_LIFETIME:
            # an invalidation's tombstone may be gone (cachekit.leases.rules): not stored,
            # and the waiters compute themselves (they may have come after it)
            store, outcome, entry = False, b"x", b""
        try:
            stored = await self.coordinator.afinish(
                key, lease.lock_key, done_key, token, outcome, entry, store, seconds,
                linger=self.options.wait_timeout, held=lease.held or b"",
            )  # fmt: skip
        except Exception as exc:  # the lock expires on its own; waiters time out
            self.cache._failed(exc, None)
            return
        if store and not stored:
            self._lease_lost(key, lease)

    def _lease_lost(self, key: str, lease: Lease) -> None:
        took = time.monotonic() - lease.since
        if took >= self.options.lock_ttl:
            logger.warning(
                "not storing %r: computing it took %.1f s, longer than lock_ttl=%s "
                "(another caller may have stored a newer value since)",
                key,
                took,
                self.options.lock_ttl,
            )
        else:
            logger.debug("not storing %r: invalidated while it was computed", key)

    async def _astore_and_finish(
        self,
        key: str,
        lease: Lease,
        value: Any,
        delta: float,
        ttl: Any,
        tags: Iterable[str],
    ) -> None:
        seconds, entry = self._entry(key, value, delta, ttl, tags)
        if entry is None:
            await self._afinish(key, lease, b"x", b"", False, None)
            return
        store = self.should_store(value) and seconds != 0
        outcome = b"v"
        if store and lease.since <= self.cache._breaker.lease_floor:
            # this process revoked every load begun before (delete_pattern, an outage's
            # invalidations reconciled): no mark names this key, so say it here
            store = False
            outcome = b"x"  # waiters compute (they may have come after)
        if store and self.cache._codec.signed:  # see AsyncCacheOps._aunmark
            await self.cache._aunmark([key])
        tags = tag_list(tags)
        if store and tags:
            # tagged writes go through the cache's own (it indexes the tags, and checks
            # the lease); then we only release and wake
            if not await self._astore_tagged(key, value, seconds, tags, entry, lease):
                outcome = b"x"  # revoked: waiters compute (they may have come after)
            store = False
        elif store:
            self.cache.counters.sets += 1
        await self._afinish(key, lease, outcome, entry, store, seconds)

    # -- computing and storing -------------------------------------------------------
    async def _atimed(
        self, func: Callable[..., Any], args: tuple[Any, ...], kwargs: Mapping[str, Any]
    ) -> tuple[Any, float]:
        started = time.monotonic()
        value = await _aresolve(func, *args, **kwargs)
        return value, time.monotonic() - started

    def _may_serve_on_error(self, stale: _Found) -> bool:
        if may_serve_on_error(stale.meta, self.clock(), self.options):
            logger.warning("serving a stale value: the function raised")
            self.cache.counters.stale += 1
            return True
        return False

    async def _acompute_and_store(
        self, key: str, call: tuple[Any, ...], stale: _Found | None
    ) -> Any:
        func, args, kwargs, ttl, tags_of = call
        lease = Lease.now()
        try:
            value, delta = await self._atimed(func, args, kwargs)
        except Exception:
            if stale is not None and self._may_serve_on_error(stale):
                return stale.value
            raise
        if self.should_store(value):
            await self._astore(key, value, delta, ttl, tags_of(args, kwargs), lease)
        return value

    def _entry(
        self, key: str, value: Any, delta: float, ttl: Any, tags: Iterable[str]
    ) -> tuple[float | None, bytes | None]:
        """``(physical ttl, entry bytes)``; entry None if the value cannot be encoded."""
        seconds = self.cache._seconds(ttl)
        meta: dict[str, Any] = {}
        tags = tag_list(tags)
        if tags:
            meta["tags"] = sorted(set(tags))
        if self.options.uses_meta:
            meta.update(entry_meta(self.clock(), seconds or None, delta))
        try:
            entry = self.cache._codec.dumps(value, meta or None, key)
        except SerializationError as exc:
            self.unencodable(key, exc)
            return seconds, None
        if seconds == 0:
            return 0, entry
        return physical_ttl(seconds, self.options), entry

    async def _astore(
        self,
        key: str,
        value: Any,
        delta: float,
        ttl: Any,
        tags: Iterable[str],
        lease: Lease | None = None,
    ) -> None:
        """Store a computed value; with the ``lease`` of its computation (None: store
        whatever happened meanwhile, as ``refresh()`` does)."""
        tags = tag_list(tags)
        if not self.options.uses_meta:
            await self.cache._astore(key, value, ttl, tags, self.unencodable, lease=lease)
            return
        seconds, entry = self._entry(key, value, delta, ttl, tags)
        if entry is None or seconds == 0:
            return
        if self.cache._codec.signed:  # see AsyncCacheOps._aunmark
            await self.cache._aunmark([key])
        if tags:
            await self._astore_tagged(key, value, seconds, tags, entry, lease)
            return
        self.cache.counters.sets += 1
        if lease is None:
            await self.cache._acall("set", False, key, entry, seconds)
        else:
            await self.cache._aguarded_set(key, entry, seconds, lease)

    async def _astore_tagged(
        self,
        key: str,
        value: Any,
        seconds: float | None,
        tags: tuple[str, ...],
        entry: Any,
        lease: Lease | None = None,
    ) -> bool:
        # the cache's tagged write indexes the tags (and stores the entry, metadata and all)
        self.cache.counters.sets += 1
        return bool(await self.cache._aset_tagged({key: entry}, seconds, tags, lease))

    # -- background refresh (stale_ttl, early_refresh) ----------------------------------
    def _refresh_in_background(self, key: str, call: tuple[Any, ...]) -> None:
        flight, leader = self.refreshing.join(key)
        if not leader:  # exactly one refresh per key in this process, queued or running
            return
        # one bounded pool per cache: 300 stale keys are a queue, not 300 threads
        if not self.cache._arefresh_pool.submit(self._arefresh, key, call, flight):
            flight.finish(None)  # the queue is full: skip (the next hit asks again)
            self.refreshing.leave(key, flight)

    async def _arefresh(self, key: str, call: tuple[Any, ...], flight: Any) -> None:
        try:
            coordinator = self.coordinator
            if coordinator is None:
                await self._acompute_and_store(key, call, None)
                return
            if self.cache._breaker.open:  # an outage: refresh later
                return
            lock_key = companion_key(self._ns_text(key), "lock", key)
            token = uuid.uuid4().hex.encode()
            # and one across processes: whoever takes the entry's lock refreshes
            kind, held = await coordinator.abegin(
                key, lock_key, token, self.options.lock_ttl, recheck=False
            )
            if kind != ACQUIRED:
                return
            func, args, kwargs, ttl, tags_of = call
            lease = Lease(time.monotonic(), lock_key, token, held)
            try:
                value, delta = await self._atimed(func, args, kwargs)
            except BaseException:
                await self._afinish(key, lease, b"e", b"", False, None)
                raise
            await self._astore_and_finish(key, lease, value, delta, ttl, tags_of(args, kwargs))
        except Exception:
            logger.warning("background refresh of %r failed", key, exc_info=True)
        finally:
            if len(self.landed) > 10_000:  # bounded: only recent refreshes matter
                self.landed.clear()
            self.landed[key] = time.monotonic()
            flight.finish(None)
            self.refreshing.leave(key, flight)
