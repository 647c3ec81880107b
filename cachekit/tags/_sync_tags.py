"""Tag registration and ``invalidate_tags``, as a mixin of :class:`cachekit.Cache`.

GENERATED from ``cachekit/tags/_async_tags.py`` by
``scripts/unasync.py`` -- do not edit; edit the async source and run the script.
Why tag sets (and not tag versions), and what they cost: see :mod:`cachekit.tags.rules`.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ..backends import base
from ..core.keys import Namespace, escape_glob
from ..exceptions import BackendError, ConfigurationError
from ..leases._sync_leases import LeaseOps
from ..leases.rules import Lease, LocalMarks, queue_revoke
from ..stampede._sync_coordination import queue_mark
from .rules import (
    INVALIDATE_BATCH,
    INVALIDATE_SCRIPT,
    REGISTER_CHUNK,
    REGISTER_SCRIPT,
    TAG_KIND,
    MemoryTagIndex,
    chunks,
    dying_key,
    memory_index,
    tag_key,
    tag_list,
    tag_mark_key,
    tag_set_pairs,
    tag_set_ttl_ms,
)

__all__ = ["TagOps"]


def _ms(ttl: float) -> int:
    return max(1, int(ttl * 1000))


def _sample(dying: Any, batch: base.CommandBatch) -> None:
    batch.srandmember(dying, INVALIDATE_BATCH)


def _forget_batch(
    dying: Any, members: list[Any], tombstones: bool, batch: base.CommandBatch
) -> None:
    """Invalidate the members (a tombstone each, revoking their loads in flight:
    cachekit.leases.rules; else unlinked), forget them, and sample the next members, in
    one round trip."""
    if tombstones:
        for member in members:
            queue_revoke(batch, member)
    else:
        batch.unlink(*members)
    batch.srem(dying, *members)
    _sample(dying, batch)


class TagOps(LeaseOps):
    _base_ns: Namespace  # the namespace at generation 0 (Cache.__init__)
    if TYPE_CHECKING:  # in CacheOps

        def _space(self) -> Namespace: ...

    _scan: base.Scan | None  # the backend's capabilities, asked once (Cache.__init__)
    _local_state: base.LocalState | None

    def _tags_in_redis(self) -> bool:
        """Where the tag sets live: with the entries when the backend runs scripts and
        scans (``clear()`` finds the sets) (capabilities asked once, Cache.__init__), else
        in the in-process store's ``local_state()``. A remote backend without them has no
        place for tags that every process sees: tags kept in this process would let other
        processes serve invalidated entries."""
        if self._scripts is not None and self._scan is not None:
            return True
        if self._local_state is not None:
            return False
        raise ConfigurationError(
            "tags need a backend that offers scripts() and scan() (Redis) or "
            f"local_state() (in-process); {type(self._backend).__qualname__} does not (see "
            "cachekit.backends.base)"
        )

    def _memory_index(self) -> MemoryTagIndex:
        """The in-process store's tag index (only when not _tags_in_redis())."""
        assert self._local_state is not None
        return memory_index(self._local_state, self._backend)

    def _local_marks(self) -> LocalMarks:
        """The in-process store's invalidation marks, which its leases keep too
        (:class:`cachekit.leases.stores.LocalLeases`; only when not _tags_in_redis())."""
        assert self._local_state is not None
        return self._local_state.get(LocalMarks)

    def _set_tagged(
        self,
        items: Mapping[str, Any],
        seconds: float | None,
        tags: Sequence[str],
        lease: Lease | None = None,
    ) -> bool:
        """Write encoded entries and register them under ``tags``, failing open. With a
        ``lease`` (a load's store, see :mod:`cachekit.leases.rules`) an entry is written only
        if it was not invalidated since the load started."""
        if self._breaker.open:
            return bool(self._skip(False))
        if lease is not None and lease.since <= self._breaker.lease_floor:
            return False
        try:
            if not self._tags_in_redis():
                self._memory_index().register(items, self._tag_keys(tags))
                if lease is None:
                    self._backend.set_many(items, seconds)
                    return True
                backend = self._backend
                marks = self._local_marks()
                tag_keys = self._tag_keys(tags)
                stored = True
                for key, entry in items.items():
                    store = functools.partial(backend.set, key, entry, seconds)
                    stored = bool(marks.store(key, lease.since, store, False, tag_keys)) and stored
                return stored
            if lease is not None:
                return all(
                    [
                        self._guarded_set_tagged(key, entry, seconds, tags, lease)
                        for key, entry in items.items()
                    ]
                )
            return self._redis_write(items, seconds, tags, with_entries=True)
        except Exception as exc:
            return bool(self._failed(exc, False))

    def _register_tags(
        self, keys: Iterable[str], seconds: float | None, tags: Sequence[str]
    ) -> None:
        """Register keys under tags without writing them (before ``add``), failing open."""
        if self._breaker.open:
            self._skip(None)
            return
        try:
            if not self._tags_in_redis():
                self._memory_index().register(keys, self._tag_keys(tags))
                return
            self._redis_write(dict.fromkeys(keys, b""), seconds, tags, with_entries=False)
        except Exception as exc:
            self._failed(exc, None)

    def _tag_keys(self, tags: Iterable[str]) -> list[str]:
        return [tag_key(self._ns.text, tag) for tag in tags]

    def _redis_write(
        self,
        items: Mapping[str, Any],
        seconds: float | None,
        tags: Sequence[str],
        *,
        with_entries: bool,
    ) -> bool:
        # One round trip: the tag registrations first, then the entries, so that a
        # failure in between leaves a registered key without entry (harmless), never an
        # entry its tag cannot find.
        # Safe to repeat (SADD, SET): a restarted Redis that forgot the script gets the
        # whole batch again (Scripts.batch), in the same order.
        keys = list(items)
        ttl_arg = tag_set_ttl_ms(seconds)
        tag_keys = self._tag_keys(tags)

        def fill(batch: base.CommandBatch) -> None:
            for name in tag_keys:
                for part in chunks(keys, REGISTER_CHUNK):
                    batch.script(REGISTER_SCRIPT, [name], [ttl_arg, *part])
            if with_entries:
                for key, stored in items.items():
                    if seconds is None:
                        batch.set(key, stored)
                    else:
                        batch.set(key, stored, px=_ms(seconds))

        assert self._scripts is not None
        results = self._scripts.batch(fill)
        return all(bool(r) for r in results)

    def invalidate_tags(self, *tags: str) -> int:
        """Remove every entry written with any of ``tags``, in every process; the number
        removed. Fails open (logged, 0) unless the cache was made with ``on_error="raise"``.
        """
        names = tag_list(tags)
        if not names:
            return 0
        self._space()  # the tag sets of the generation known now
        self._tags_in_redis()  # a backend without a place for tags: ConfigurationError
        # an invalidation that cannot be delivered now is replayed before reads resume
        if self._breaker.open and self._defer((), names):
            return int(self._skip(0))
        try:
            return self._invalidate_tags_now(names)
        except Exception as exc:
            error = self._counted(exc)  # trips the breaker on an outage
            self._undelivered((), names)
            if self._raise_errors or not isinstance(error, BackendError):
                raise error from exc
            return 0

    def _invalidate_tags_now(self, names: Sequence[str]) -> int:
        """Delete the members of these tags, and revoke the loads in flight of the tags'
        entries, stored already or not (see :mod:`cachekit.leases.rules`); raises."""
        tag_keys = self._tag_keys(names)
        if not self._tags_in_redis():
            keys = list(self._memory_index().take(tag_keys))
            backend = self._backend
            marks = self._local_marks()
            try:
                return int(marks.revoke(keys + tag_keys, lambda: backend.delete_many(keys)))
            finally:
                self._flights.forget(keys)
        scripts = self._scripts
        assert scripts is not None

        def fill(batch: base.CommandBatch) -> None:
            for name in tag_keys:
                queue_mark(batch, tag_mark_key(name))

        scripts.batch(fill)
        return self._invalidate_in_redis(names)

    def _clear_tags(self) -> int:
        """For ``clear()``: invalidate every tag of the namespace, at every generation
        (members deleted, sets gone; a tagged write racing this lands in a fresh set); the
        entries removed."""
        head = self._base_ns.internal(TAG_KIND)
        if self._scripts is None or self._scan is None:
            if self._local_state is None:
                return 0  # no tags could be written there (_tags_in_redis)
            keys = self._memory_index().take_under(head)
            return int(self._backend.delete_many(list(keys))) if keys else 0
        found = self._scan.scan(escape_glob(head) + "*")
        generation = self._generation
        # the internal keys of the generations above 0, of every kind: their tag sets
        for name in self._scan.scan(generation.internal_generations_pattern):
            text = name.decode("utf-8", "surrogateescape") if isinstance(name, bytes) else name
            if generation.is_generation_internal(text, TAG_KIND):
                found.append(name)
        return self._invalidate_sets(tag_set_pairs(found))

    def _invalidate_in_redis(self, tags: Sequence[str]) -> int:
        pairs = [(tag_key(self._ns.text, tag), dying_key(self._ns.text, tag)) for tag in tags]
        return self._invalidate_sets(pairs)

    def _invalidate_sets(self, pairs: Sequence[tuple[Any, Any]]) -> int:
        scripts = self._scripts
        assert scripts is not None
        deleted = 0
        for keys in pairs:
            dying = keys[1]
            left = scripts.run(INVALIDATE_SCRIPT, keys, [])
            members: list[Any] = []
            if left:
                (members,) = scripts.batch(functools.partial(_sample, dying))
            tombstones = self._tombstones is not None
            while members:
                # delete first, then forget: an interrupted run is finished by the next
                fill = functools.partial(_forget_batch, dying, members, tombstones)
                *removed, _, members = scripts.batch(fill)
                deleted += sum(int(n) for n in removed)
        return deleted
