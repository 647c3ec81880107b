"""Tag registration and ``ainvalidate_tags``, as a mixin of :class:`cachekit.Cache`.

This file is the source: ``cachekit/_sync/tags.py`` is generated from it by
``scripts/unasync.py`` (CI fails when they drift). Edit here, then run the script.
Why tag sets (and not tag versions), and what they cost: see :mod:`cachekit._tags`.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import redis.exceptions

from .._concurrency import forget_flights
from .._keys import escape_glob
from .._leases import Lease, local_marks
from .._tags import (
    INVALIDATE_BATCH,
    INVALIDATE_SCRIPT,
    INVALIDATE_SHA,
    REGISTER_CHUNK,
    REGISTER_SCRIPT,
    REGISTER_SHA,
    TAG_KIND,
    chunks,
    dying_key,
    memory_index,
    tag_key,
    tag_list,
    tag_mark_key,
    tag_set_pairs,
    tag_set_ttl_ms,
)
from ..exceptions import BackendError
from .coordination import queue_mark
from .leases import AsyncLeaseOps

__all__ = ["AsyncTagOps"]


def _ms(ttl: float) -> int:
    return max(1, int(ttl * 1000))


class AsyncTagOps(AsyncLeaseOps):
    def _tags_in_redis(self) -> bool:
        # Redis (and fakeredis) backends expose their client provider; anything else
        # keeps its tag sets in this process, next to the backend object.
        return hasattr(self._abackend, "clients")

    async def _aset_tagged(
        self,
        items: Mapping[str, Any],
        seconds: float | None,
        tags: Sequence[str],
        lease: Lease | None = None,
    ) -> bool:
        """Write encoded entries and register them under ``tags``, failing open. With a
        ``lease`` (a load's store, see :mod:`cachekit._leases`) an entry is written only
        if it was not invalidated since the load started."""
        if self._breaker.open:
            return bool(self._skip(False))
        if lease is not None and lease.since <= self._breaker.lease_floor:
            return False
        try:
            if not self._tags_in_redis():
                memory_index(self._abackend).register(items, self._tag_keys(tags))
                if lease is None:
                    await self._abackend.set_many(items, seconds)
                    return True
                backend = self._backend
                marks = local_marks(backend)
                tag_keys = self._tag_keys(tags)
                stored = True
                for key, entry in items.items():
                    store = functools.partial(backend.set, key, entry, seconds)
                    stored = bool(marks.store(key, lease.since, store, False, tag_keys)) and stored
                return stored
            if lease is not None:
                return all(
                    [
                        await self._aguarded_set_tagged(key, entry, seconds, tags, lease)
                        for key, entry in items.items()
                    ]
                )
            return await self._aredis_write(items, seconds, tags, with_entries=True)
        except Exception as exc:
            return bool(self._failed(exc, False))

    async def _aregister_tags(
        self, keys: Iterable[str], seconds: float | None, tags: Sequence[str]
    ) -> None:
        """Register keys under tags without writing them (before ``add``), failing open."""
        if self._breaker.open:
            self._skip(None)
            return
        try:
            if not self._tags_in_redis():
                memory_index(self._abackend).register(keys, self._tag_keys(tags))
                return
            await self._aredis_write(dict.fromkeys(keys, b""), seconds, tags, with_entries=False)
        except Exception as exc:
            self._failed(exc, None)

    def _tag_keys(self, tags: Iterable[str]) -> list[str]:
        return [tag_key(self._ns.text, tag) for tag in tags]

    async def _aredis_write(
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
        client = self._abackend.clients.get()
        keys = list(items)
        ttl_arg = tag_set_ttl_ms(seconds)
        for attempt in (1, 2):
            async with client.pipeline(transaction=False) as pipe:
                for name in self._tag_keys(tags):
                    for part in chunks(keys, REGISTER_CHUNK):
                        pipe.evalsha(REGISTER_SHA, 1, name, ttl_arg, *part)
                if with_entries:
                    for key, stored in items.items():
                        if seconds is None:
                            pipe.set(key, stored)
                        else:
                            pipe.set(key, stored, px=_ms(seconds))
                results = await pipe.execute(raise_on_error=False)
            missing = [r for r in results if isinstance(r, redis.exceptions.NoScriptError)]
            if missing and attempt == 1:  # a restarted Redis forgot the script
                await client.script_load(REGISTER_SCRIPT)
                continue
            for result in results:
                if isinstance(result, Exception):
                    raise result
            return all(bool(r) for r in results)
        raise AssertionError("unreachable")  # pragma: no cover

    async def ainvalidate_tags(self, *tags: str) -> int:
        """Remove every entry written with any of ``tags``, in every process; the number
        removed. Fails open (logged, 0) unless the cache was made with ``on_error="raise"``.
        """
        names = tag_list(tags)
        if not names:
            return 0
        # an invalidation that cannot be delivered now is replayed before reads resume
        if self._breaker.open and self._defer((), names):
            return int(self._skip(0))
        try:
            return await self._ainvalidate_tags_now(names)
        except Exception as exc:
            error = self._counted(exc)  # trips the breaker on an outage
            self._undelivered((), names)
            if self._raise_errors or not isinstance(error, BackendError):
                raise error from exc
            return 0

    async def _ainvalidate_tags_now(self, names: Sequence[str]) -> int:
        """Delete the members of these tags, and revoke the loads in flight of the tags'
        entries, stored already or not (see :mod:`cachekit._leases`); raises."""
        tag_keys = self._tag_keys(names)
        if not self._tags_in_redis():
            keys = list(memory_index(self._abackend).take(tag_keys))
            backend = self._backend
            marks = local_marks(backend)
            try:
                return int(marks.revoke(keys + tag_keys, lambda: backend.delete_many(keys)))
            finally:
                forget_flights(self, keys)
        client = self._abackend.clients.get()
        async with client.pipeline(transaction=False) as pipe:
            for name in tag_keys:
                queue_mark(pipe, tag_mark_key(name))
            await pipe.execute()
        return await self._ainvalidate_in_redis(names)

    async def _aclear_tags(self) -> int:
        """For ``clear()``: invalidate every tag of the namespace (members deleted, sets
        gone; a tagged write racing this lands in a fresh set); the entries removed."""
        head = self._ns.internal(TAG_KIND)
        if not self._tags_in_redis():
            keys = memory_index(self._abackend).take_under(head)
            return int(await self._abackend.delete_many(list(keys))) if keys else 0
        client = self._abackend.clients.get()
        found = [name async for name in client.scan_iter(match=escape_glob(head) + "*")]
        return await self._ainvalidate_sets(tag_set_pairs(found))

    async def _ainvalidate_in_redis(self, tags: Sequence[str]) -> int:
        pairs = [(tag_key(self._ns.text, tag), dying_key(self._ns.text, tag)) for tag in tags]
        return await self._ainvalidate_sets(pairs)

    async def _ainvalidate_sets(self, pairs: Sequence[tuple[Any, Any]]) -> int:
        client = self._abackend.clients.get()
        deleted = 0
        for keys in pairs:
            dying = keys[1]
            try:
                left = await client.evalsha(INVALIDATE_SHA, 2, *keys)
            except redis.exceptions.NoScriptError:
                left = await client.eval(INVALIDATE_SCRIPT, 2, *keys)
            members = await client.srandmember(dying, INVALIDATE_BATCH) if left else []
            while members:
                # delete first, then forget: an interrupted run is finished by the next
                async with client.pipeline(transaction=False) as pipe:
                    for member in members:  # revoke the loads in flight (cachekit._leases)
                        queue_mark(pipe, self._mark_key(member.decode()))
                    pipe.unlink(*members)
                    pipe.srem(dying, *members)
                    pipe.srandmember(dying, INVALIDATE_BATCH)
                    *_, unlinked, _, members = await pipe.execute()
                deleted += int(unlinked)
        return deleted
