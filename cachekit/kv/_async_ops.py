"""The key/value API for async callers, as a mixin of :class:`cachekit.Cache`.

This file is the source: ``cachekit/kv/_sync_ops.py`` is generated from it by
``scripts/unasync.py`` (CI fails when they drift). Edit here, then run the script.
Decisions (keys, TTLs, encoding, error policy) live in :mod:`cachekit.core.policy`, shared by
both; only the backend calls differ.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar, overload

from ..core.codec import Boxed, CorruptEntry, UnsignedCounter
from ..core.concurrency import _aresolve
from ..core.generation import Generation, parse_generation
from ..core.keys import Namespace, escape_glob
from ..core.policy import DEFAULT, incr_delta
from ..core.sentinel import MISSING
from ..exceptions import BackendError, InvalidArgumentError, SerializationError
from ..leases.rules import Lease, note_unserved
from ..stampede._async_stampede import AsyncStampede
from ..stampede.rules import StampedeOptions
from ..tags._async_tags import AsyncTagOps
from ..tags.rules import tag_list

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from ..decorator.types import StampedeKeywords

__all__ = ["AsyncCacheOps"]

logger = logging.getLogger(__name__)

T = TypeVar("T")


class AsyncCacheOps(AsyncTagOps):
    _generation: Generation  # the namespace generation this cache knows (Cache.__init__)
    # an in-process store's lock-free reader (Cache.__init__; see cachekit.decorator.fastpath)
    _reader: Callable[[str], Any] | None

    async def _aspace(self) -> Namespace:
        """The namespace of entries now: the generation is re-read first when the poll
        interval has passed since it was last read (see :mod:`cachekit.core.generation`).
        Every operation that builds entry keys starts here; on memory it never reads."""
        generation = self._generation
        if generation.movable and generation.clock() >= generation.valid_until:
            await self._aread_generation()
        return generation.ns

    async def _aread_generation(self) -> None:
        """Read the generation (one GET). Fails open: a failed read keeps the one known;
        with the circuit open nothing is read (the operation skips the backend too, and
        the first one after it closes reads the generation)."""
        generation = self._generation
        if self._breaker.open:
            return
        epoch, read_at = generation.reading()
        try:
            stored = await self._abackend.get(generation.key)
        except Exception as exc:
            generation.failed()
            self._failed(exc, None)  # counted, logged; raised under on_error="raise"
            return
        number = parse_generation(stored)
        if number is None:  # not a counter: someone else's write; keep what is known
            generation.failed()
            logger.warning("ignoring the unreadable generation %r of %r", stored, generation.key)
            return
        generation.learn(number, epoch, read_at)

    async def ainvalidate_all(self) -> bool:
        """Make every entry of this cache's namespace unreachable at once, for every
        process; True when done. On Redis one ``INCR`` of the namespace's generation (O(1):
        the old entries then expire by their TTL or are evicted; ``clear()`` removes them);
        other processes see it within ``generation_poll`` seconds (near caches at once,
        through their link). In process (memory) the entries are removed. Loads in flight
        that started before store nowhere anyone reads. Locks, write-behind queues, rate
        limits and sessions are untouched. A failing backend: logged and False (the bump is
        replayed before this process reads the backend again), or raised under
        ``on_error="raise"``."""
        if not self._generation.movable:  # in process: the entries go
            await self.aclear()
            return True
        return await self._abump()

    async def _abump(self) -> bool:
        """Bump the generation (one INCR); the caller's process knows it at once."""
        generation = self._generation
        if self._breaker.open and self._breaker.defer_bump(self):
            return bool(self._skip(False))
        try:
            number = int(await self._abackend.incr(generation.key, 1, None))
        except Exception as exc:
            error = self._counted(exc)  # trips the breaker on an outage
            if not self._breaker.defer_bump(self):
                logger.warning("invalidate_all() failed and could not be kept for later")
            if self._raise_errors or not isinstance(error, BackendError):
                raise error from exc
            return False
        generation.bumped(number)
        return True

    async def _acall(self, method: str, default: Any, *args: Any) -> Any:
        """A backend call that fails open: ``default`` when the backend fails."""
        if self._breaker.open:
            return self._skip(default)
        try:
            return await getattr(self._abackend, method)(*args)
        except Exception as exc:
            return self._failed(exc, default)

    async def _afetch(self, key: str) -> Any:
        """The stored form under a full key, or MISSING (absent, or backend failing)."""
        if self._breaker.open:
            return self._skip(MISSING)
        try:
            stored = await self._abackend.get(key)
        except Exception as exc:
            return self._failed(exc, MISSING)
        if stored is MISSING:
            self.counters.misses += 1
        return stored

    async def _alookup(self, key: str) -> Any:
        """The value under a full key, or MISSING (absent, corrupt, or backend failing).
        From an in-process store's reader when there is one (a hit: no backend dispatch,
        codec or circuit breaker, which memory does not need); else the backend's."""
        read = self._reader
        if read is not None:
            found = read(key)
            if found is not MISSING:
                self.counters.hits += 1
                return found.value if type(found) is Boxed else found
        # _afetch inlined (every miss and every non-memory hit comes here: a frame less)
        if self._breaker.open:
            return self._skip(MISSING)
        try:
            stored = await self._abackend.get(key)
        except Exception as exc:
            return self._failed(exc, MISSING)
        if stored is MISSING:
            self.counters.misses += 1
            return MISSING
        try:
            value = self._codec.loads(stored, key)
        except UnsignedCounter as exc:  # with a secret: a counter only if its key is marked
            if not (await self._acounter_marks([key]))[0]:
                note_unserved(self._atombstones, key, stored)  # a load may store over it
                return self._corrupt(key, exc)
            value = exc.value
        except CorruptEntry as exc:
            note_unserved(self._atombstones, key, stored)
            return self._corrupt(key, exc)
        self.counters.hits += 1
        return value

    async def _acounter_marks(self, keys: list[str]) -> list[bool]:
        """Whether each key carries a valid counter mark (see :mod:`cachekit.core.codec`)."""
        marks = await self._acall("get_many", None, [self._counter_mark_key(k) for k in keys])
        if marks is None:
            return [False] * len(keys)
        return [self._codec.is_counter_mark(key, mark) for key, mark in zip(keys, marks)]

    async def _amark_counters(self, keys: list[str], seconds: float | None) -> None:
        """With a secret: mark these keys as counters, before their bare value is written
        (so a reader never finds an unmarked one); the mark lives as long as ``seconds``."""
        marks = {self._counter_mark_key(key): self._codec.counter_mark(key) for key in keys}
        await self._acall("set_many", None, marks, seconds)

    async def _aunmark(self, keys: list[str]) -> None:
        """With a secret: drop the counter marks of keys about to hold a signed entry (or
        nothing), so that a bare integer put there later is refused, not served as a
        counter. Called before the write: while it runs the key holds its old counter,
        unmarked (a miss), never the new entry beside a valid mark. Callers check
        ``self._codec.signed`` first: without a secret there are no marks and no cost."""
        await self._acall("delete_many", 0, [self._counter_mark_key(key) for key in keys])

    async def _astore(
        self,
        key: str,
        value: Any,
        ttl: Any,
        tags: Iterable[str] | None,
        unencodable: Callable[[str, SerializationError], bool] | None = None,
        lease: Lease | None = None,
    ) -> bool:
        """Store a computed value, failing open (an unencodable value is logged, not raised;
        ``unencodable`` reports it instead: ``@cached`` logs once per function). A load
        passes its ``lease`` (see :mod:`cachekit.leases.rules`): then nothing is stored if the
        entry was invalidated after the load started."""
        seconds = self._seconds(ttl)
        tags = tag_list(tags) if tags else ()
        try:
            stored = self._encode(value, tags, key)
        except SerializationError as exc:
            return (unencodable or self._unencodable)(key, exc)
        return await self._astore_entry(key, stored, seconds, tags, lease)

    async def _astore_load(
        self,
        key: str,
        value: Any,
        seconds: float | None,
        tags: Iterable[str] | None,
        unencodable: Callable[[str, SerializationError], bool],
        lease: Lease,
        fresh: Callable[[Any, Any], Any],
    ) -> Any:
        """A load's store (as ``_astore``) that returns the value as a hit of it will:
        ``fresh(value, entry)`` (see :mod:`cachekit.core.typed`) decodes the entry just
        encoded, so the value goes through the serializer once, not twice. ``seconds``: the
        entry's lifetime, through ``_seconds`` already (once per decorated function)."""
        names = tag_list(tags) if tags else ()
        codec = self._codec
        try:
            stored = self._encode(value, names, key) if names else codec.dumps(value, None, key)
        except SerializationError as exc:
            unencodable(key, exc)  # raises under on_error="raise", as _astore does
            return value  # not storable: the caller gets its own value
        if names or seconds == 0:
            await self._astore_entry(key, stored, seconds, names, lease)
        else:  # the common case, inline: an untagged load's guarded store
            if codec.signed:
                await self._aunmark([key])
            self.counters.sets += 1
            await self._aguarded_set(key, stored, seconds, lease)
        return fresh(value, stored)

    async def _astore_entry(
        self,
        key: str,
        stored: Any,
        seconds: float | None,
        tags: tuple[str, ...],
        lease: Lease | None,
    ) -> bool:
        if seconds == 0:
            return False
        if self._codec.signed:
            await self._aunmark([key])
        self.counters.sets += 1
        if tags:
            return await self._aset_tagged({key: stored}, seconds, tags, lease)
        if lease is not None:
            return await self._aguarded_set(key, stored, seconds, lease)
        return bool(await self._acall("set", False, key, stored, seconds))

    async def aget(self, key: Any, default: Any = None) -> Any:
        value = await self._alookup((await self._aspace()).key(key))
        return default if value is MISSING else value

    async def aset(
        self, key: Any, value: Any, ttl: Any = DEFAULT, *, tags: Iterable[str] | None = None
    ) -> bool:
        """Store ``value``; ``ttl`` in seconds or a timedelta (None or inf: no expiry; 0 or
        less: delete; NaN or a non-number: :class:`~cachekit.InvalidArgumentError`)."""
        tags = tag_list(tags)
        await self._aspace()
        full, seconds, stored = self._prepare(key, value, ttl, tags)
        if seconds == 0:
            await self._arevoke([full])
            return False
        if self._is_counter(value, tags):
            await self._amark_counters([full], seconds)
        elif self._codec.signed:
            await self._aunmark([full])
        self.counters.sets += 1
        if tags:
            done = await self._aset_tagged({full: stored}, seconds, tags)
        else:
            done = bool(await self._acall("set", False, full, stored, seconds))
        if not done:  # the old entry must not outlive a write that did not land
            await self._alost_write([full])
        return done

    async def aadd(
        self, key: Any, value: Any, ttl: Any = DEFAULT, *, tags: Iterable[str] | None = None
    ) -> bool:
        """Store only if absent; True if stored."""
        tags = tag_list(tags)
        await self._aspace()
        full, seconds, stored = self._prepare(key, value, ttl, tags)
        if seconds == 0:
            return False
        counter = self._is_counter(value, tags)
        if counter:
            await self._amark_counters([full], seconds)
        if tags:
            await self._aregister_tags([full], seconds, tags)
        added = bool(await self._acall("add", False, full, stored, seconds))
        if added and self._codec.signed and not counter:
            # after, not before: an add that finds a counter must leave its mark. The key
            # was absent, so a mark there outlived its counter (which expired first)
            await self._aunmark([full])
        return added

    async def adelete(self, key: Any) -> bool:
        """Remove an entry; True if it existed. Loads of it in flight will not store what
        they read before (see :mod:`cachekit.leases.rules`); if the backend is unreachable the
        delete is replayed before this process reads from it again."""
        return bool(await self._arevoke([(await self._aspace()).key(key)]))

    async def aget_many(self, keys: Iterable[Any]) -> dict[Any, Any]:
        """The entries found, as ``{key: value}`` (missing keys are left out)."""
        wanted = list(keys)
        ns = await self._aspace()
        full = [ns.key(key) for key in wanted]
        stored = await self._acall("get_many", None, full)
        if stored is None:
            return {}
        counters: dict[Any, Any] = {}
        found = self._decode_many(wanted, full, stored, counters if self._codec.signed else None)
        if counters:  # bare integers under a secret: served only under a counter mark
            marked = await self._acounter_marks([full_key for full_key, _ in counters.values()])
            for (key, (full_key, exc)), ok in zip(counters.items(), marked):
                if ok:
                    found[key] = exc.value
                    self.counters.hits += 1
                else:
                    self._corrupt(full_key, exc)
        return found

    async def aset_many(
        self, mapping: Mapping[Any, Any], ttl: Any = DEFAULT, *, tags: Iterable[str] | None = None
    ) -> bool:
        """Store several entries in one round trip; True if the backend took them."""
        tags = tag_list(tags)
        ns = await self._aspace()
        items, seconds = self._prepare_many(mapping, ttl, tags)
        if seconds == 0:
            await self._arevoke(list(items))
            return False
        counters = [ns.key(k) for k, v in mapping.items() if self._is_counter(v, tags)]
        if counters:
            await self._amark_counters(counters, seconds)
        if self._codec.signed and len(counters) < len(items):
            marked = set(counters)
            await self._aunmark([full for full in items if full not in marked])
        self.counters.sets += len(items)
        if tags:
            done = await self._aset_tagged(items, seconds, tags)
        else:
            done = await self._acall("set_many", False, items, seconds) is None
        if not done:
            await self._alost_write(list(items))
        return done

    async def adelete_many(self, keys: Iterable[Any]) -> int:
        """Remove several entries in one round trip; the number that existed."""
        ns = await self._aspace()
        return await self._arevoke([ns.key(key) for key in keys])

    async def aexists(self, key: Any) -> bool:
        return bool(await self._acall("exists", False, (await self._aspace()).key(key)))

    @overload
    async def attl(self, key: Any) -> float | None: ...
    @overload
    async def attl(self, key: Any, default: T) -> float | T | None: ...
    async def attl(self, key: Any, default: Any = None) -> Any:
        """Seconds left; None when the entry never expires; ``default`` (None) when there is
        no such entry, so ``ttl(key, default=cachekit.MISSING)`` tells the two apart. A
        failing backend gives None (fail-open: nothing is known)."""
        left = await self._acall("ttl", None, (await self._aspace()).key(key))
        return default if left is MISSING else left

    async def aexpire(self, key: Any, ttl: float | None) -> bool:
        """Give an entry a new TTL (None: never expires); False if there is no entry."""
        full = (await self._aspace()).key(key)
        seconds = self._seconds(ttl)
        if seconds == 0:
            return bool(await self._arevoke([full]))
        return bool(await self._acall("expire", False, full, seconds))

    async def aincr(self, key: Any, delta: int = 1, ttl: Any = DEFAULT) -> int:
        """Add ``delta`` (an int; a missing entry starts at 0 and gets ``ttl``); the new value.

        A counter's value is the data itself, so a failing backend raises
        :class:`~cachekit.BackendError` here rather than failing open.
        """
        full = (await self._aspace()).key(key)
        delta = incr_delta(delta)
        seconds = self._seconds(ttl)
        if seconds == 0 and ttl is not DEFAULT:  # "do not keep" makes no sense for a counter
            raise InvalidArgumentError(f"incr() needs a ttl > 0 seconds or None, not {ttl!r}")
        if self._breaker.open:
            raise self._circuit_error()
        if self._codec.signed:  # counters cannot be signed: mark the key instead
            await self._amark_counters([full], seconds or None)
        try:
            return int(await self._abackend.incr(full, delta, seconds or None))
        except Exception as exc:
            error = self._counted(exc)
            if self._codec.signed and not self._breaker.open:
                # INCRBY refused what the key holds (not a counter): the mark written above
                # must not stay beside it (dropping a mark only ever makes a miss)
                try:
                    await self._aunmark([full])
                except Exception:  # on_error="raise": the incr's own error is the one raised
                    pass
            raise error from exc

    async def adelete_pattern(self, pattern: str) -> int:
        """Remove this cache's entries whose key matches a glob (``user:*``); SCAN, not KEYS.

        Loads in flight in this process that started before do not store; on Redis, those
        of other processes may still store what they read before (no key is known to
        mark): use ``invalidate_all()`` or ``clear()`` for a bulk change of the source."""
        await self._aspace()
        # loads of this process that started before do not store (other processes' may)
        self._breaker.lease_floor = time.monotonic()
        self._aleases.revoke_all()  # in process: every cache's over the store
        if self._codec.signed:  # their counter marks first (see _aunmark), clear() included
            await self._acall("delete_pattern", 0, self._counter_marks_pattern(pattern))
        return int(await self._acall("delete_pattern", 0, self._ns.pattern(pattern)))

    async def aclear(self) -> int:
        """Remove every entry of this cache's namespace, at every generation (never the
        rest of the database), and its tag sets with them; the number removed. Loads in
        flight that started before do not make what they read visible: on Redis the
        generation is bumped first (they store under the old one, which nobody reads), in
        process they are refused. Held locks and write-behind queues (queued writes, dead
        letters) are internal keys outside the namespace's pattern: they stay."""
        self._aleases.revoke_all()  # in process: refused (on Redis the bump does it)
        bump_error: Exception | None = None
        if self._generation.movable:
            try:
                await self._abump()  # fails open; kept for the breaker to replay
            except Exception as exc:  # on_error="raise": the clear itself goes on first
                bump_error = exc
        removed = 0
        if not self._breaker.open:
            try:
                removed = await self._aclear_tags()  # first: see _aclear_tags
            except Exception as exc:
                self._failed(exc, 0)
        base = self._base_ns
        if self._codec.signed:  # their counter marks first (see _aunmark)
            await self._acall("delete_pattern", 0, escape_glob(base.internal("counter")) + "*")
        removed += int(await self._acall("delete_pattern", 0, base.pattern("*")))
        if self._generation.movable:
            removed += int(await self._acall("delete_pattern", 0, base.generations_pattern))
            if bump_error is not None:
                raise bump_error
        return removed

    async def aget_or_set(
        self,
        key: Any,
        loader: Callable[[], Any],
        ttl: Any = DEFAULT,
        *,
        tags: Iterable[str] | None = None,
        **stampede: Unpack[StampedeKeywords],
    ) -> Any:
        """Cache-aside in one call: the cached value, or ``loader()``'s, stored.

        Stampede options as on ``@cached`` (:class:`~cachekit.decorator.types.StampedeKeywords`):
        ``lock`` (one computation per key, across processes on Redis; ``lock_ttl`` bounds a
        crashed holder, waiters compute themselves after ``lock_timeout``),
        ``early_refresh`` (XFetch beta, True = 1), ``stale_ttl`` (serve stale that long
        while one background refresh runs), ``stale_if_error`` (serve stale when the
        loader raises).
        """
        full = (await self._aspace()).key(key)
        options = (
            StampedeOptions.build(**stampede, ttl=self._seconds(ttl) or None) if stampede else None
        )
        if options is not None and options.active:
            fixed_tags = tag_list(tags)
            return await self._async_stampede(options).aget(
                full, loader, (), {}, ttl, lambda args, kwargs: fixed_tags
            )
        value = await self._alookup(full)
        if value is MISSING:
            lease = Lease.now()
            value = await _aresolve(loader)
            await self._astore(full, value, ttl, tags, lease=lease)
        return value

    def _async_stampede(self, options: StampedeOptions) -> AsyncStampede:
        """The stampede driver for ``get_or_set`` calls with these options (one per set)."""
        drivers = self._flights.async_drivers
        driver = drivers.get(options)
        if driver is None:
            driver = drivers[options] = AsyncStampede(self, options, lambda value: True)
        return driver

    async def _alookup_meta(self, key: str) -> Any:
        """``(value, metadata, stored)`` under a full key, or MISSING (as ``_alookup``)."""
        stored = await self._afetch(key)
        if stored is MISSING:
            return MISSING
        try:
            value, meta = self._codec.loads_meta(stored, key)
        except CorruptEntry as exc:
            note_unserved(self._atombstones, key, stored)
            return self._corrupt(key, exc)
        self.counters.hits += 1
        return value, meta, stored

    async def aping(self) -> bool:
        """True if the backend answers."""
        try:
            return bool(await self._abackend.ping())
        except Exception as exc:
            return bool(self._failed(exc, False))

    async def aclose(self) -> None:
        """Flush and stop this cache's write-behind queues, then close the connections."""
        await self._writes.aclose()
        self._breaker.close()
        if "_abackend" in self.__dict__:  # only if it was ever used
            await self._abackend.close()
