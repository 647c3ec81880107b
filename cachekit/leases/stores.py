"""The :class:`~cachekit.backends.base.Leases` a cache wires, once, for its backend.

Every load's store and every invalidation of entries goes through one of these (see
:mod:`cachekit.leases.rules` for the guarantee); the features never ask which backend
they run on:

- the backend's ``tombstones()`` (Redis: invalidations kept in the entries' own keys);
- else, for an in-process backend (``local = True``), :class:`LocalLeases`: the
  invalidations are timestamps (:class:`~cachekit.leases.rules.LocalMarks`) kept in the
  store's ``local_state()``, so every cache over one store shares them (as processes
  share Redis), checked under one lock with the store;
- else :class:`UnguardedLeases`: a remote backend that keeps no invalidations, where a
  load's store is a plain ``set`` (no lease check is possible there).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..backends.base import AsyncLeases, Capabilities, Leases
from ..exceptions import ConfigurationError
from .rules import LocalMarks

__all__ = ["LocalLeases", "UnguardedLeases", "leases_for"]


def _nothing() -> None:
    return None


class LocalLeases:
    """Leases of an in-process store: an invalidation marks its keys and deletes them, a
    load's store happens only if no mark is newer than the load, both under the marks'
    lock. Sync and async alike (the store never blocks)."""

    def __init__(self, backend: Any, marks: LocalMarks) -> None:
        self._backend = backend
        self.marks = marks

    def revoke(self, keys: Sequence[str]) -> int:
        backend = self._backend
        return int(self.marks.revoke(keys, lambda: backend.delete_many(keys)))

    def store(self, key: str, entry: Any, ttl: float | None, since: float) -> bool:
        backend = self._backend
        return self.marks.store(key, since, lambda: bool(backend.set(key, entry, ttl)), False)

    async def arevoke(self, keys: Sequence[str]) -> int:
        return self.revoke(keys)

    async def astore(self, key: str, entry: Any, ttl: float | None, since: float) -> bool:
        return self.store(key, entry, ttl, since)

    def revoke_all(self) -> None:
        self.marks.revoke_all()

    def fence(self, keys: Sequence[str]) -> None:
        self.marks.revoke(keys, _nothing)


class UnguardedLeases:
    """A remote backend that keeps no invalidations (no ``tombstones()``): a load's store
    is a plain ``set``, an invalidation a delete. Loads of this process that began before
    an invalidation are still refused by the cache's breaker floor where one applies."""

    def __init__(self, backend: Any, async_backend: Any) -> None:
        self._backend = backend
        self._abackend = async_backend

    def revoke(self, keys: Sequence[str]) -> int:
        return int(self._backend.delete_many(keys))

    def store(self, key: str, entry: Any, ttl: float | None, since: float) -> bool:
        return bool(self._backend.set(key, entry, ttl))

    async def arevoke(self, keys: Sequence[str]) -> int:
        return int(await self._async().delete_many(keys))

    async def astore(self, key: str, entry: Any, ttl: float | None, since: float) -> bool:
        return bool(await self._async().set(key, entry, ttl))

    def revoke_all(self) -> None:
        pass

    def fence(self, keys: Sequence[str]) -> None:
        pass

    def _async(self) -> Any:
        if self._abackend is None:
            raise ConfigurationError("this cache was given no async backend")
        return self._abackend


def leases_for(caps: Capabilities, backend: Any, async_backend: Any) -> tuple[Leases, AsyncLeases]:
    """The sync and async leases of a backend pair (see the module docstring)."""
    if caps.tombstones is not None:
        return caps.tombstones, caps.atombstones or UnguardedLeases(backend, async_backend)
    if caps.local:
        state = caps.local_state
        marks = LocalMarks() if state is None else state.get(LocalMarks)
        local = LocalLeases(backend, marks)
        return local, local
    unguarded = UnguardedLeases(backend, async_backend)
    return unguarded, unguarded
