"""The near layer one cache wires once: the L1 store, the invalidation link, the rules
shared by the sync and async backend wrappers (:mod:`._async_backend`)."""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

from ..core.sentinel import MISSING
from ._cluster import ClusterLinks
from ._link import InvalidationLink, connection_factory
from ._store import NearOptions, NearStore

__all__ = ["NearLayer", "RecordingBatch", "ttl_left"]

_KEY_BYTES = 4096  # bytes arguments longer than this are values, not keys


class NearLayer:
    def __init__(
        self,
        options: NearOptions,
        client_of: Callable[[], Any],
        prefixes: str | tuple[str, ...],
        *,
        connect: Callable[[], Any] | None = None,
        links: Callable[[NearStore, tuple[str, ...]], ClusterLinks] | None = None,
        watched: tuple[str, ...] = (),
    ) -> None:
        self.options = options
        self.store = NearStore(options)
        # entries under these are kept in the L1; the link tracks them and ``watched``
        # too (keys whose change matters, read past the L1: a namespace's generation)
        self.prefixes: tuple[str, ...] = (prefixes,) if isinstance(prefixes, str) else prefixes
        self.watched: tuple[str, ...] = watched
        if connect is None:  # not a method of this layer: the link's thread must not keep it

            def connect() -> Any:
                return connection_factory(client_of())()

        # ``links``: a cluster's, one per primary (._cluster); else one link. Both track
        # the kept prefixes and the watched ones
        tracked = self.prefixes + self.watched
        self.link: InvalidationLink | ClusterLinks = (
            InvalidationLink(self.store, connect, tracked)
            if links is None
            else links(self.store, tracked)
        )
        self.closed = False
        # a cache dropped without close(): its link's thread and connection go with it
        weakref.finalize(self, self.link.close)

    def tracked(self, key: str) -> bool:
        """Whether ``key`` is under a prefix the link tracks (others bypass the L1:
        nothing would tell this process when they change)."""
        return not self.closed and key.startswith(self.prefixes)

    def track(self, prefix: str, *, watched: bool = False) -> None:
        """Keep the keys under ``prefix`` too (a ``with_options(prefix=...)`` cache over
        this layer): the link reconnects tracking every prefix, the L1 flushed meanwhile.
        ``watched``: only tracked (see ``__init__``), not kept."""
        known_ones = self.prefixes + self.watched
        if any(prefix.startswith(known) for known in known_ones):
            return
        # Redis refuses overlapping prefixes: one inside the new one goes
        def keep(others: tuple[str, ...]) -> tuple[str, ...]:
            return tuple(p for p in others if not p.startswith(prefix))

        prefixes, others = keep(self.prefixes), keep(self.watched)
        if watched:
            others = (*others, prefix)
        else:
            prefixes = (*prefixes, prefix)
        self.link.retrack(prefixes + others)
        self.prefixes, self.watched = prefixes, others

    def started(self) -> None:
        self.link.ensure_started()

    def fence(self) -> None:
        """After a write whose keys this process does not know: see NearStore.fence."""
        self.store.fence()
        self.link.ping()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.link.close()

    def stats(self) -> dict[str, Any]:
        store, link = self.store, self.link
        return {
            "near_entries": len(store),
            "near_max_entries": self.options.max_entries,
            "near_max_stale": self.options.max_stale,
            "near_serving": store.serving(),
            "near_link": "up" if link.connected else "down",
            "near_link_failures": link.failures,
            "near_flushes": store.flushes,
            "near_invalidations": store.invalidations,
            "near_evictions": store.evictions,
            "near_hits": store.hits,
        }


def ttl_left(millis: Any) -> Any:
    """A ``PTTL`` reply as the store wants it: seconds, None (no expiry), MISSING (gone)."""
    millis = int(millis)
    if millis == -2:
        return MISSING
    return None if millis == -1 else millis / 1000


def key_like(values: Any) -> list[Any]:
    """The arguments of a command that may be keys (text, short bytes): dropped from the
    L1 after the command ran. Dropping a value that was no key costs nothing."""
    return [
        value
        for value in values
        if type(value) is str or (type(value) is bytes and len(value) <= _KEY_BYTES)
    ]


class RecordingBatch:
    """A command batch being filled (cachekit.backends.base.CommandBatch) that remembers
    every argument that may be a key, for the L1 to drop once the batch ran."""

    __slots__ = ("_batch", "keys")

    def __init__(self, batch: Any, keys: list[Any]) -> None:
        self._batch = batch
        self.keys = keys

    def script(self, script: str, keys: Any, args: Any) -> None:
        self.keys.extend(key_like(keys))
        self._batch.script(script, keys, args)

    def __getattr__(self, command: str) -> Any:
        queue = getattr(self._batch, command)
        keys = self.keys

        def recorded(*args: Any, **kwargs: Any) -> Any:
            keys.extend(key_like(args))
            return queue(*args, **kwargs)

        return recorded
