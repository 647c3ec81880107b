"""Leases and invalidations for sync callers, as a mixin of :class:`cachekit.Cache`.

GENERATED from ``cachekit/leases/_async_leases.py`` by
``scripts/unasync.py`` -- do not edit; edit the async source and run the script.

- ``_guarded_set``: a load's store, made only while its lease holds (see
  :mod:`cachekit.leases.rules`: not after an invalidation that came after the load started).
- ``_revoke``: every invalidation of entries goes through here. It marks and deletes; and
  when the backend cannot be reached (circuit open, or the delete failed) the keys are
  kept as *pending* by the circuit breaker, which replays them before it lets reads
  through again (see :mod:`cachekit.core.breaker`). So an invalidation is never lost
  silently: until it is delivered, this process does not read the backend at all.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ..backends import base
from ..core.breaker import Pending
from ..core.concurrency import FlightTables
from ..core.generation import Generation
from ..core.policy import CachePolicy
from ..exceptions import BackendError
from ..stampede import _sync_coordination as coordination
from ..tags.rules import REGISTER_SCRIPT, tag_key, tag_mark_key, tag_set_ttl_ms
from .rules import GUARDED_SET, MARK_LIFETIME, Lease

__all__ = ["LeaseOps"]

logger = logging.getLogger(__name__)

_REPLAY_BATCH = 1000  # keys per round trip when pending invalidations are replayed


class LeaseOps(CachePolicy):
    _leases: base.Leases  # a load's store, an invalidation (cachekit.leases.stores)
    _scripts: base.Scripts | None  # the backend's capabilities, asked once (Cache.__init__)
    _tombstones: base.Tombstones | None
    _flights: FlightTables  # the stampede's computations in progress (Cache.__init__)
    _generation: Generation  # the namespace generation known (Cache.__init__)
    if TYPE_CHECKING:  # in TagOps and CacheOps

        def _invalidate_tags_now(self, names: Sequence[str]) -> int: ...
        def _store(
            self, key: str, value: Any, ttl: Any, tags: Iterable[str] | None
        ) -> bool: ...
        def _unmark(self, keys: list[str]) -> None: ...
        def _redis_write(
            self,
            items: Mapping[str, Any],
            seconds: float | None,
            tags: Sequence[str],
            *,
            with_entries: bool,
        ) -> bool: ...

    def _guarded_set(
        self, key: str, entry: Any, seconds: float | None, lease: Lease
    ) -> bool:
        """Store a load's result unless the entry was invalidated since the load started,
        or (with a lock token) the lock no longer holds our token."""
        if self._breaker.open:
            return bool(self._skip(False))
        if lease.since <= self._breaker.lease_floor:
            return False  # started before an outage's invalidations were reconciled
        try:
            return self._leases.store(key, entry, seconds, lease.since)
        except Exception as exc:
            return bool(self._failed(exc, False))

    def _guarded_set_tagged(
        self, key: str, entry: Any, seconds: float | None, tags: Sequence[str], lease: Lease
    ) -> bool:
        """A tagged load's store on Redis, in one round trip: its tags registered (first,
        as every tagged write), the entry stored only over what the load's read found
        (nothing, or the same tombstone; with a lock: while the lock holds its token), and
        the tags' invalidation marks read. The tag sets live in other cluster slots than
        the entry, so a tag invalidated since the load started is noticed next to the
        store rather than inside its script: the store is then undone."""
        scripts, tombstones = self._scripts, self._tombstones
        assert scripts is not None  # only called when tags live with the backend
        if tombstones is None:  # a remote backend without tombstones: no lease check
            return self._redis_write({key: entry}, seconds, tags, with_entries=True)
        if time.monotonic() - lease.since >= MARK_LIFETIME:
            return False
        check = coordination.StoreCheck(lease)
        keys, args = tombstones.store_args(
            key, entry, seconds, lease.since, lease.lock_key, lease.token, lease.held
        )
        ttl_arg = tag_set_ttl_ms(seconds)

        ns_text = self._generation.text_of(key)  # the tag sets of the entry's generation

        def fill(batch: base.CommandBatch) -> None:  # by text: a guarded store must not be repeated
            for tag in tags:
                name = tag_key(ns_text, tag)
                batch.eval(REGISTER_SCRIPT, 1, name, ttl_arg, key)
                batch.eval(
                    coordination.MARK_AGE, *coordination.tag_check_args(tag_mark_key(name), check)
                )
            batch.eval(GUARDED_SET, len(keys), *keys, *args)

        results = scripts.batch(fill)
        stored = int(results[-1])
        tag_checks = results[1:-1:2]
        tags_ok = all(int(ok) for ok, _ in tag_checks)
        ages = [int(tag_age) for _, tag_age in tag_checks]
        if stored and (not tags_ok or any(check.doubtful(one) for one in ages)):
            coordination.undo(scripts, key, entry)
            return False
        return bool(stored)

    def _write_over(
        self, key: str, value: Any, ttl: Any, tags: Iterable[str] | None
    ) -> bool:
        """An explicit write of a value the source now holds (``@cache.updates``, a
        write-through ``set``): loads of the key in flight read the source before this
        write, so they are revoked first (one more round trip), then the value is stored;
        a write that does not land is remembered as an invalidation."""
        self._revoke([key])
        stored = self._store(key, value, ttl, tags)
        if not stored:
            self._lost_write([key])
        return stored

    def _revoke(self, keys: Sequence[str]) -> int:
        """Invalidate entries (full keys): delete them and revoke the leases of loads in
        flight; the number that existed. Fails open, but never silently: an invalidation
        that cannot be delivered now is pending until the backend answers again."""
        keys = list(keys)
        if not keys:
            return 0
        self._flights.forget(keys)  # see _revoke_now; here for a deferred invalidation
        if self._breaker.open and self._defer(keys, ()):
            return int(self._skip(0))
        try:
            removed = self._revoke_now(keys)
        except Exception as exc:
            error = self._counted(exc)  # trips the breaker on an outage
            self._undelivered(keys, ())
            if self._raise_errors or not isinstance(error, BackendError):
                raise error from exc
            return 0
        if self._codec.signed:  # an entry deleted is no counter: a bare int put back is refused
            self._unmark(keys)
        return removed

    def _revoke_now(self, keys: Sequence[str]) -> int:
        try:
            return self._leases.revoke(keys)
        finally:
            # callers from now on do not join a computation that began before: it may
            # return what was just invalidated (those that joined already were concurrent)
            self._flights.forget(keys)

    def _defer(self, keys: Iterable[str], tags: Iterable[str]) -> bool:
        """Keep invalidations for the breaker to replay; False if the circuit is closed
        (the caller delivers them itself)."""
        return self._breaker.defer(keys, tags, self)

    def _undelivered(self, keys: Sequence[str], tags: Sequence[str]) -> None:
        """An invalidation failed with the circuit closed (an error that is not an outage):
        nothing will replay it, so say so."""
        if not self._defer(keys, tags):
            logger.warning(
                "an invalidation failed and could not be kept for later (%d keys, %d tags)",
                len(keys),
                len(tags),
            )

    def _lost_write(self, keys: Sequence[str]) -> None:
        """An explicit write that did not reach the backend: the old entry must not be
        served after recovery, so drop it now or, if unreachable, when the backend is back."""
        if not self._defer(keys, ()):
            self._revoke(keys)

    def _replay_pending(self, pending: Pending) -> None:
        """Deliver what was invalidated while the backend was unreachable (called by the
        breaker, before it lets reads through). Raises if the backend fails again."""
        if pending.bump:  # an invalidate_all() made during the outage: first
            generation = self._generation
            generation.bumped(int(self._backend.incr(generation.key, 1, None)))
        if pending.overflow:
            # too many to remember: every entry of the namespace goes, and loads of this
            # process that started before now do not store
            self._breaker.lease_floor = time.monotonic()
            if self._codec.signed:  # and every counter mark (see _revoke)
                self._backend.delete_pattern(self._counter_marks_pattern("*"))
            self._backend.delete_pattern(self._ns.pattern("*"))
            logger.warning(
                "more invalidations than could be remembered during the outage: "
                "cleared the namespace %r",
                self._ns.text,
            )
            return
        if pending.tags:
            self._invalidate_tags_now(sorted(pending.tags))
        keys = sorted(pending.keys)
        for start in range(0, len(keys), _REPLAY_BATCH):
            batch = keys[start : start + _REPLAY_BATCH]
            self._revoke_now(batch)
            if self._codec.signed:  # as _revoke: a deleted entry keeps no counter mark
                self._backend.delete_many([self._counter_mark_key(k) for k in batch])
