"""The in-process backend: a bounded LRU dict with per-entry TTL.

Reads take no lock: under the GIL one ``OrderedDict.get`` and one ``move_to_end`` are each
atomic, and an entry is an immutable ``(value, expires_at)`` tuple, so a reader sees either
the old or the new entry, never half of one. Writes take a lock so that eviction and the
expiry heap stay consistent. Expired entries are dropped when read (lazy) and, at most
once per ``sweep_interval``, by a sweep on write driven by a heap of expiry times
(periodic), so a cache full of expired entries does not keep them.

``eviction="tinylfu"`` swaps the LRU order for W-TinyLFU (see :mod:`.tinylfu`): the entry
dict is then a :class:`~.tinylfu.TinyLFUEntries`, which answers the same calls.
"""

from __future__ import annotations

import heapq
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from sys import intern
from typing import Any

from ...core.glob import glob_to_regex
from ...core.sentinel import MISSING
from ...exceptions import BackendError, CacheKitError, IncrementError
from ..base import LocalState
from ._async_lock import AsyncMemoryLock
from ._sync_lock import MemoryLock
from .lock import LockTable
from .tinylfu import TinyLFUEntries

__all__ = ["AsyncMemoryBackend", "MemoryBackend"]

_FOREVER = float("inf")


class MemoryBackend:
    local = True

    def __init__(
        self,
        max_entries: int = 10_000,
        *,
        sweep_interval: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        eviction: str = "lru",
    ) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        if eviction not in ("lru", "tinylfu"):
            raise ValueError(f"eviction must be 'lru' or 'tinylfu', not {eviction!r}")
        self.max_entries = max_entries
        self.eviction = eviction
        self._expiries: list[tuple[float, str]] = []
        self._lock = threading.Lock()
        self._data: OrderedDict[str, tuple[Any, float]] | TinyLFUEntries = (
            OrderedDict() if eviction == "lru" else TinyLFUEntries(max_entries, self._lock)
        )
        self._clock = clock
        self._sweep_interval = sweep_interval
        self._next_sweep = clock() + sweep_interval
        self.evictions = 0
        self.locks = LockTable(clock)
        self._read = _reader(self)  # get()'s (an override of reader() is for its callers)
        self._local_state = LocalState()

    def local_state(self) -> LocalState:
        """Where features keep their state of this store (a capability,
        cachekit.backends.base): every cache over it shares it."""
        return self._local_state

    # -- reads (lock-free) ------------------------------------------------------------
    def reader(self) -> Callable[[str], Any]:
        """A lookup bound to this store, for hot paths: ``read(key)`` returns the stored
        value, or ``MISSING`` when the key is absent or expired (the entry is then dropped).

        It is :meth:`get` with the method dispatch and attribute lookups done once, here:
        one dict read, one read of the store's clock, and the eviction policy's record of
        the read (the LRU touch, or W-TinyLFU's read buffer). It counts nothing (the
        caller knows hit from miss by ``MISSING``) and converts nothing: an entry stored
        with metadata comes back as the codec's ``Boxed``. Safe from any thread, like
        :meth:`get`; the store's dict is never replaced, so a reader never goes stale.
        """
        return _reader(self)

    def get(self, key: str) -> Any:
        return self._read(key)

    def get_many(self, keys: Sequence[str]) -> list[Any]:
        return [self.get(key) for key in keys]

    def exists(self, key: str) -> bool:
        entry = self._data.get(key)
        return entry is not None and entry[1] > self._clock()

    def ttl(self, key: str) -> Any:
        entry = self._data.get(key)
        if entry is None:
            return MISSING
        left = entry[1] - self._clock()
        if left <= 0:
            return MISSING
        return None if entry[1] == _FOREVER else left

    # -- writes -------------------------------------------------------------------------
    def _deadline(self, ttl: float | None, now: float) -> float:
        return _FOREVER if ttl is None else now + ttl

    def _store(self, key: str, value: Any, deadline: float) -> None:
        # caller holds the lock. Keys are interned: a hot path holding the interned key
        # (cachekit.decorator.fastpath remembers keys) then finds it by identity, not by comparing
        # the text, in the dict read and the LRU touch.
        if type(key) is str:
            key = intern(key)
        data = self._data
        data[key] = (value, deadline)
        data.move_to_end(key)
        if deadline != _FOREVER:
            heapq.heappush(self._expiries, (deadline, key))
        while len(data) > self.max_entries:
            data.popitem(last=False)
            self.evictions += 1

    def _maybe_sweep(self, now: float) -> None:
        # caller holds the lock
        if now < self._next_sweep:
            return
        self._next_sweep = now + self._sweep_interval
        heap, data = self._expiries, self._data
        while heap and heap[0][0] <= now:
            deadline, key = heapq.heappop(heap)
            entry = data.get(key)
            if entry is not None and entry[1] == deadline:
                del data[key]
        if len(heap) > 2 * len(data) + 64:  # overwritten keys leave stale heap items
            self._expiries = [(e[1], k) for k, e in data.items() if e[1] != _FOREVER]
            heapq.heapify(self._expiries)

    def _expire(self, key: str, entry: tuple[Any, float]) -> None:
        with self._lock:
            if self._data.get(key) is entry:
                del self._data[key]

    def set(self, key: str, value: Any, ttl: float | None) -> bool:
        now = self._clock()
        with self._lock:
            self._store(key, value, self._deadline(ttl, now))
            self._maybe_sweep(now)
        return True

    def add(self, key: str, value: Any, ttl: float | None) -> bool:
        now = self._clock()
        with self._lock:
            entry = self._data.get(key)
            if entry is not None and entry[1] > now:
                return False
            self._store(key, value, self._deadline(ttl, now))
            self._maybe_sweep(now)
        return True

    def set_many(self, items: Mapping[str, Any], ttl: float | None) -> None:
        now = self._clock()
        deadline = self._deadline(ttl, now)
        with self._lock:
            for key, value in items.items():
                self._store(key, value, deadline)
            self._maybe_sweep(now)

    def delete(self, key: str) -> bool:
        with self._lock:
            entry = self._data.pop(key, None)
        return entry is not None and entry[1] > self._clock()

    def delete_many(self, keys: Sequence[str]) -> int:
        now = self._clock()
        deleted = 0
        with self._lock:
            for key in keys:
                entry = self._data.pop(key, None)
                if entry is not None and entry[1] > now:
                    deleted += 1
        return deleted

    def expire(self, key: str, ttl: float | None) -> bool:
        now = self._clock()
        with self._lock:
            entry = self._data.get(key)
            if entry is None or entry[1] <= now:
                return False
            self._store(key, entry[0], self._deadline(ttl, now))
        return True

    def incr(self, key: str, delta: int, ttl: float | None) -> int:
        now = self._clock()
        with self._lock:
            entry = self._data.get(key)
            if entry is None or entry[1] <= now:
                value, deadline = 0, self._deadline(ttl, now)
            else:
                value, deadline = entry
                if type(value) is bytes and value.lstrip(b"-").isdigit():
                    # encoded by a serializing codec, which stores integers bare
                    number = int(value) + delta
                    self._store(key, str(number).encode(), deadline)
                    return number
                if type(value) is not int:
                    raise IncrementError(f"cannot increment a {type(value).__qualname__} value")
            value += delta
            self._store(key, value, deadline)
        return value

    def delete_pattern(self, pattern: str) -> int:
        match = glob_to_regex(pattern).fullmatch
        now = self._clock()
        deleted = 0
        with self._lock:
            for key in [k for k in self._data if match(k)]:
                entry = self._data.pop(key)
                deleted += entry[1] > now
        return deleted

    def keys(self, pattern: str = "*") -> list[str]:
        """Live keys matching ``pattern`` (for inspection and tests)."""
        match = glob_to_regex(pattern).fullmatch
        now = self._clock()
        return [k for k, e in list(self._data.items()) if e[1] > now and match(k)]

    def __len__(self) -> int:
        return len(self._data)

    def stats(self) -> dict[str, Any]:
        """This store's facts for ``Cache.stats()`` (a capability, cachekit.backends.base)."""
        return {
            "entries": len(self),
            "max_entries": self.max_entries,
            "evictions": self.evictions,
            "eviction": self.eviction,
        }

    def ping(self) -> bool:
        return True

    def lock(self, key: str, ttl: float) -> MemoryLock:
        """A lock on ``key`` that expires ``ttl`` seconds after it is taken."""
        return MemoryLock(self.locks, key, ttl)

    def close(self) -> None:
        pass

    def translate_error(self, exc: BaseException) -> CacheKitError:
        if isinstance(exc, CacheKitError):
            return exc
        return BackendError(f"memory backend: {type(exc).__name__}: {exc}")


def _reader(store: MemoryBackend) -> Callable[[str], Any]:
    """:meth:`MemoryBackend.reader` (the store's dict, clock and policy bound once)."""
    data = store._data
    entry_of = data.get
    record = data.move_to_end if isinstance(data, OrderedDict) else data.record_read
    clock = store._clock
    expire = store._expire
    missing = MISSING

    def read(key: str) -> Any:
        entry = entry_of(key)
        if entry is None:
            return missing
        if entry[1] <= clock():
            expire(key, entry)
            return missing
        try:
            record(key)
        except KeyError:  # deleted by another thread since the read: still a hit
            pass
        return entry[0]

    return read


class AsyncMemoryBackend:
    """The memory backend for async callers: the same store, no I/O, nothing to await on."""

    local = True

    def __init__(self, sync: MemoryBackend) -> None:
        self.sync = sync
        self.translate_error = sync.translate_error

    async def get(self, key: str) -> Any:
        return self.sync.get(key)

    async def get_many(self, keys: Sequence[str]) -> list[Any]:
        return self.sync.get_many(keys)

    async def set(self, key: str, value: Any, ttl: float | None) -> bool:
        return self.sync.set(key, value, ttl)

    async def add(self, key: str, value: Any, ttl: float | None) -> bool:
        return self.sync.add(key, value, ttl)

    async def set_many(self, items: Mapping[str, Any], ttl: float | None) -> None:
        self.sync.set_many(items, ttl)

    async def delete(self, key: str) -> bool:
        return self.sync.delete(key)

    async def delete_many(self, keys: Sequence[str]) -> int:
        return self.sync.delete_many(keys)

    async def exists(self, key: str) -> bool:
        return self.sync.exists(key)

    async def ttl(self, key: str) -> Any:
        return self.sync.ttl(key)

    async def expire(self, key: str, ttl: float | None) -> bool:
        return self.sync.expire(key, ttl)

    async def incr(self, key: str, delta: int, ttl: float | None) -> int:
        return self.sync.incr(key, delta, ttl)

    async def delete_pattern(self, pattern: str) -> int:
        return self.sync.delete_pattern(pattern)

    async def ping(self) -> bool:
        return True

    def local_state(self) -> LocalState:
        return self.sync.local_state()

    def lock(self, key: str, ttl: float) -> AsyncMemoryLock:
        return AsyncMemoryLock(self.sync.locks, key, ttl)

    async def close(self) -> None:
        pass
