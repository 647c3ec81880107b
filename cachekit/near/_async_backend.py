"""The near cache as a backend wrapper, for async callers.

This file is the source: ``cachekit/near/_sync_backend.py`` is generated from it by
``scripts/unasync.py`` (CI fails when they drift). Edit here, then run the script.

:class:`AsyncNearBackend` implements the backend contract (cachekit.backends.base) around
a Redis backend and passes its capabilities through: reads are served from the L1 of
:class:`~cachekit.near._layer.NearLayer` while it may serve them, misses fill it (one
round trip: ``GET`` and ``PTTL``, so an L1 entry dies when its Redis key does); every
write drops the keys it names from the L1 once it ran (a script's or a batch's arguments
included: tags, leases, revokes), and a write whose keys are not known here
(``delete_pattern``, ``clear``) fences the L1 until the link has caught up. What other
processes (and scripts) change reaches the L1 through the invalidation link.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ..backends import base
from ..core.sentinel import MISSING
from ..leases.rules import TombstoneLog
from ._layer import NearLayer, RecordingBatch, key_like, ttl_left

__all__ = ["AsyncNearBackend", "AsyncNearScripts"]


def _get_ttl(key: str, batch: base.CommandBatch) -> None:
    batch.get(key)
    batch.pttl(key)


class AsyncNearScripts:
    """The inner backend's scripts and batches; the keys they name leave the L1 after."""

    def __init__(self, inner: base.AsyncScripts, layer: NearLayer) -> None:
        self._inner = inner
        self._store = layer.store

    async def run(self, script: str, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        try:
            return await self._inner.run(script, keys, args)
        finally:
            self._store.invalidate(key_like(keys))

    async def load(self, script: str) -> None:
        await self._inner.load(script)

    async def batch(self, fill: Callable[[base.CommandBatch], None]) -> list[Any]:
        keys: list[Any] = []

        def recorded(batch: base.CommandBatch) -> None:
            fill(RecordingBatch(batch, keys))

        try:
            return await self._inner.batch(recorded)
        finally:
            self._store.invalidate(keys)


class AsyncNearTombstones:
    """The inner backend's tombstones (invalidations, loads' stores); the keys they write
    leave the L1 after."""

    def __init__(self, inner: base.AsyncTombstones, layer: NearLayer) -> None:
        self._inner = inner
        self._store = layer.store
        self.store_args = inner.store_args
        self.log = inner.log  # type: ignore[attr-defined]

    async def arevoke(self, keys: Sequence[str]) -> int:
        try:
            return await self._inner.arevoke(keys)
        finally:
            self._store.invalidate(keys)

    async def astore(self, key: str, entry: Any, ttl: float | None, since: float) -> bool:
        try:
            return await self._inner.astore(key, entry, ttl, since)
        finally:
            self._store.invalidate((key,))

    def revoke_all(self) -> None:
        self._inner.revoke_all()

    def fence(self, keys: Sequence[str]) -> None:
        self._inner.fence(keys)


class AsyncNearBackend:
    local = False

    def __init__(self, inner: Any, layer: NearLayer) -> None:
        self.inner = inner
        self.layer = layer
        self.translate_error = inner.translate_error
        self._store = layer.store
        scripts = inner.scripts()
        self._inner_scripts: base.AsyncScripts = scripts
        self._scripts = AsyncNearScripts(scripts, layer)
        offer = getattr(inner, "tombstones", None)
        tombstones: base.AsyncTombstones | None = None if offer is None else offer()
        self._tombstones = None if tombstones is None else AsyncNearTombstones(tombstones, layer)
        # a tombstone the L1's fills find is a miss, noted where the loads look for it
        self._log: TombstoneLog = getattr(tombstones, "log", None) or TombstoneLog()

    # -- capabilities (cachekit.backends.base): the inner backend's, scripts wrapped ----
    def scripts(self) -> AsyncNearScripts:
        return self._scripts

    def wakeups(self) -> Any:
        return self.inner.wakeups()

    def client(self) -> Any:
        return self.inner.client()

    def streams(self) -> Any:
        return self.inner.streams()

    def scan(self) -> Any:
        return self.inner.scan()

    def tombstones(self) -> AsyncNearTombstones | None:
        return self._tombstones

    def stats(self) -> dict[str, Any]:
        return self.layer.stats()

    def watch_key(self, key: str, watcher: Any) -> None:
        self._store.watch(key, watcher)

    def decoding_reader(self, loads_meta: Callable[[Any, str], Any]) -> Callable[[str], Any]:
        return self._store.reader(loads_meta)

    # -- reads ------------------------------------------------------------------------
    async def get(self, key: str) -> Any:
        store = self._store
        stored = store.lookup(key)
        if stored is not MISSING:
            return stored
        if not self.layer.tracked(key):
            return await self.inner.get(key)
        self.layer.started()
        token = store.begin(key)
        try:
            value, millis = await self._inner_scripts.batch(functools.partial(_get_ttl, key))
        except BaseException:
            store.abandon(key, token)
            raise
        stored = self._log.absent(key, value)
        store.finish(key, token, stored, ttl_left(millis))
        return stored

    async def get_many(self, keys: Sequence[str]) -> list[Any]:
        store, layer = self._store, self.layer
        found = [store.lookup(key) for key in keys]
        missed = [i for i, value in enumerate(found) if value is MISSING]
        wanted = [i for i in missed if layer.tracked(keys[i])]
        others = [i for i in missed if not layer.tracked(keys[i])]
        if wanted:
            layer.started()
            names = [keys[i] for i in wanted]
            tokens = [store.begin(key) for key in names]

            def fill(batch: base.CommandBatch) -> None:
                batch.mget(names)
                for name in names:
                    batch.pttl(name)

            try:
                values, *ttls = await self._inner_scripts.batch(fill)
            except BaseException:
                for key, token in zip(names, tokens):
                    store.abandon(key, token)
                raise
            for i, key, token, value, millis in zip(wanted, names, tokens, values, ttls):
                found[i] = self._log.absent(key, value)
                store.finish(key, token, found[i], ttl_left(millis))
        if others:
            values = await self.inner.get_many([keys[i] for i in others])
            for i, value in zip(others, values):
                found[i] = value
        return found

    async def exists(self, key: str) -> bool:
        return bool(await self.inner.exists(key))

    async def ttl(self, key: str) -> Any:
        return await self.inner.ttl(key)

    # -- writes: the keys named leave the L1 once the write ran (or failed) --------------
    async def set(self, key: str, value: Any, ttl: float | None) -> bool:
        try:
            return bool(await self.inner.set(key, value, ttl))
        finally:
            self._store.invalidate((key,))

    async def add(self, key: str, value: Any, ttl: float | None) -> bool:
        try:
            return bool(await self.inner.add(key, value, ttl))
        finally:
            self._store.invalidate((key,))

    async def set_many(self, items: Mapping[str, Any], ttl: float | None) -> None:
        try:
            await self.inner.set_many(items, ttl)
        finally:
            self._store.invalidate(list(items))

    async def delete(self, key: str) -> bool:
        try:
            return bool(await self.inner.delete(key))
        finally:
            self._store.invalidate((key,))

    async def delete_many(self, keys: Sequence[str]) -> int:
        try:
            return int(await self.inner.delete_many(keys))
        finally:
            self._store.invalidate(keys)

    async def expire(self, key: str, ttl: float | None) -> bool:
        try:
            return bool(await self.inner.expire(key, ttl))
        finally:
            self._store.invalidate((key,))

    async def incr(self, key: str, delta: int, ttl: float | None) -> int:
        try:
            return int(await self.inner.incr(key, delta, ttl))
        finally:
            self._store.invalidate((key,))

    async def delete_pattern(self, pattern: str) -> int:
        try:
            return int(await self.inner.delete_pattern(pattern))
        finally:
            self.layer.fence()

    async def ping(self) -> bool:
        return bool(await self.inner.ping())

    def lock(self, key: str, ttl: float) -> Any:
        return self.inner.lock(key, ttl)

    async def close(self) -> None:
        self.layer.close()
        await self.inner.close()
