"""The near cache's rules, without I/O: the in-process L1, its fills and when it may serve.

One :class:`NearStore` per near layer (shared by the sync and async backends of a cache).

- **Serving window.** An entry is served only while ``clock() < serve_until``, which the
  invalidation link (:mod:`._link`) moves forward: when the answer to a ``PING`` sent at
  time ``s`` comes back on the link, every invalidation Redis generated before ``s`` has
  been applied (one connection, in order), so serving until ``s + max_stale`` never returns
  a value overwritten more than ``max_stale`` ago. A silent link (Redis frozen, a cut
  cable) stops the window by itself; a link that drops flushes the L1 (invalidations may
  have been lost) and serves nothing until it is confirmed again.
- **Fills.** A miss installs a placeholder (a "filling" entry) before it sends its read; an
  invalidation of the key (or a flush) removes it; the reply is stored only if the same
  placeholder is still there. So an invalidation that arrives before the reply it
  invalidates is never undone by storing that (stale) reply.
- **Fences.** A write of this process whose keys are not known here (``delete_pattern``,
  ``clear``) sets a barrier: the L1 serves nothing until a ``PING`` sent after it is
  answered (all the write's invalidations applied), about one round trip.

Reads take no lock (one dict read, one clock read, the LRU touch), as the memory backend's
:func:`~cachekit.backends.memory.MemoryBackend.reader`; changes take one lock.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from sys import intern
from typing import Any

from ..core.codec import Boxed
from ..core.sentinel import MISSING
from ..exceptions import ConfigurationError

__all__ = ["NearOptions", "NearStore", "near_option"]

_FOREVER = float("inf")
_UNSET: Any = object()  # an entry not decoded yet


@dataclass(frozen=True)
class NearOptions:
    """``near={"max_entries": ..., "max_stale": ...}``: how many entries the L1 keeps, and
    the longest a value may be served after the write that replaced it (seconds)."""

    max_entries: int = 10_000
    max_stale: float = 1.0


def near_option(value: Any) -> NearOptions | None:
    """The ``near`` option's check: False/None (off), True (defaults), a mapping of
    ``max_entries`` / ``max_stale``, or :class:`NearOptions`."""
    if value is None or value is False:
        return None
    if value is True:
        return NearOptions()
    if isinstance(value, NearOptions):
        return value
    if not isinstance(value, Mapping):
        raise ValueError('it must be True, False or a dict of "max_entries" / "max_stale"')
    unknown = set(value) - {"max_entries", "max_stale"}
    if unknown:
        raise ValueError(
            f"unknown near option(s) {sorted(unknown)}: it takes max_entries and max_stale"
        )
    entries = value.get("max_entries", NearOptions.max_entries)
    stale = value.get("max_stale", NearOptions.max_stale)
    if isinstance(entries, bool) or not isinstance(entries, int) or entries < 1:
        raise ValueError("near max_entries must be an integer >= 1")
    if isinstance(stale, bool) or not isinstance(stale, (int, float)) or not 0.05 <= stale < 3600:
        # the link PINGs every max_stale / 4: below 50 ms that is hundreds a second
        raise ValueError("near max_stale must be a number of seconds from 0.05 (below 3600)")
    return NearOptions(entries, float(stale))


def parse_near(text: str) -> Any:
    """``?near=true`` / ``CACHEKIT_NEAR=1`` (text sources: on or off, the defaults)."""
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("", "0", "false", "no", "off", "none"):
        return False
    raise ValueError("it must be true or false")


# An L1 entry is a list ``[decoded, deadline, stored]``: the stored form (as the backend
# returned it), when it dies (monotonic), and the decoded value once a reader decoded it
# (each entry is decoded at most once per process; _UNSET before). A fill in flight is
# the same shape with deadline -inf, so a read rejects it by its deadline alone; its
# identity is the fill's token. Lists, not objects: the hit path indexes them.
DECODED, DEADLINE, STORED = 0, 1, 2


def _filling() -> list[Any]:
    return [_UNSET, -_FOREVER, None]


class NearStore:
    def __init__(self, options: NearOptions, clock: Callable[[], float] = time.monotonic) -> None:
        self.options = options
        self.max_stale = options.max_stale
        self._clock = clock
        self._data: OrderedDict[str, list[Any]] = OrderedDict()
        self._lock = threading.Lock()
        self.serve_until = 0.0  # entries are served while clock() < serve_until
        self._memo_owner: Callable[[Any, str], Any] | None = None  # see reader()
        self._barrier = -_FOREVER  # a confirmation must be of a PING sent after this
        self.flushes = 0
        self.invalidations = 0
        self.evictions = 0
        self.hits = 0  # lookups served from the L1 (read by metrics: requests by layer)
        # keys whose change expires what their watchers know (a namespace generation:
        # cachekit.core.generation), and the watchers (objects with expire())
        self._watched: dict[str, weakref.WeakSet[Any]] = {}

    def watch(self, key: str, watcher: Any) -> None:
        """Call ``watcher.expire()`` when ``key`` changes (an invalidation of it arrives,
        or a flush: then nothing is known), and flush the L1 then too."""
        with self._lock:
            self._watched.setdefault(key, weakref.WeakSet()).add(watcher)

    def _expire_watchers(self, keys: Iterable[str] | None) -> bool:
        """Expire the watchers of ``keys`` (None: all); whether any key was watched."""
        watched = self._watched
        if not watched:
            return False
        names = list(watched) if keys is None else [k for k in keys if k in watched]
        for name in names:
            for watcher in list(watched[name]):
                watcher.expire()
        return bool(names)

    # -- serving (lock-free) ------------------------------------------------------------
    def lookup(self, key: str) -> Any:
        """The stored form under ``key`` while the L1 may serve it, else MISSING."""
        entry = self._data.get(key)
        if entry is None:
            return MISSING
        now = self._clock()
        if now >= entry[DEADLINE] or now >= self.serve_until:  # a fill's is -inf
            return MISSING
        try:
            self._data.move_to_end(key)
        except KeyError:  # invalidated since the read: it was valid when read
            pass
        self.hits += 1
        return entry[STORED]

    def reader(self, loads_meta: Callable[[Any, str], Any]) -> Callable[[str], Any]:
        """``read(key)``: the decoded value (by the codec's ``loads_meta(stored, key)``; a
        :class:`~cachekit.core.codec.Boxed` when it has metadata) while the L1 may serve
        the key, else MISSING (also when it cannot be decoded: the general path then reads
        it and reports it). The memory fast path's shape (:mod:`cachekit.decorator.fastpath`).

        The first reader asked for (the cache that made the layer) keeps what it decoded
        in the entry, so each entry is decoded once. Caches sharing the layer through
        ``with_options`` may decode otherwise (``serializer="raw"``, another secret):
        their readers decode every hit, never reading another codec's result."""
        entry_of = self._data.get
        touch = self._data.move_to_end
        clock = self._clock
        store = self
        missing, unset, boxed = MISSING, _UNSET, Boxed
        with self._lock:
            keeps = self._memo_owner is None
            if keeps:
                self._memo_owner = loads_meta

        def decoded(stored: Any, key: str) -> Any:
            try:
                value, meta = loads_meta(stored, key)
            except Exception:
                return missing
            return value if meta is None else boxed(value, meta)

        if not keeps:

            def read_decoding(key: str) -> Any:
                entry = entry_of(key)
                if entry is None:
                    return missing
                now = clock()
                if now >= entry[1] or now >= store.serve_until:
                    return missing
                value = decoded(entry[2], key)
                if value is not missing:
                    store.hits += 1
                return value

            return read_decoding

        def read(key: str) -> Any:
            entry = entry_of(key)
            if entry is None:
                return missing
            now = clock()
            if now >= entry[1] or now >= store.serve_until:  # a fill's deadline is -inf
                return missing
            try:
                touch(key)
            except KeyError:
                pass
            value = entry[0]
            if value is unset:
                value = decoded(entry[2], key)
                if value is missing:
                    return missing
                entry[0] = value
            store.hits += 1
            return value

        return read

    # -- fills ------------------------------------------------------------------------
    def begin(self, key: str) -> list[Any]:
        """Mark ``key`` as being filled (before its read is sent); the token to finish."""
        token = _filling()
        with self._lock:
            # over whatever is there: an entry past its deadline (or one not servable now)
            # is replaced by the reply; a fill in flight for the key then stores nothing
            self._data[key] = token
            self._evict()
        return token

    def finish(self, key: str, token: list[Any], stored: Any, ttl_left: float | None) -> None:
        """Store a fill's reply if nothing invalidated the key since :meth:`begin`;
        ``ttl_left`` is the entry's remaining life in Redis (None: no expiry). A miss
        (``stored`` MISSING) just ends the fill."""
        with self._lock:
            if self._data.get(key) is not token:
                return
            if stored is MISSING or (ttl_left is not None and ttl_left <= 0):
                del self._data[key]
                return
            deadline = _FOREVER if ttl_left is None else self._clock() + ttl_left
            if type(key) is str:
                key = intern(key)  # found by identity by a hot path holding the interned key
            self._data[key] = [_UNSET, deadline, stored]

    def abandon(self, key: str, token: list[Any]) -> None:
        with self._lock:
            if self._data.get(key) is token:
                del self._data[key]

    def _evict(self) -> None:  # caller holds the lock
        data = self._data
        while len(data) > self.options.max_entries:
            data.popitem(last=False)
            self.evictions += 1

    # -- invalidation -------------------------------------------------------------------
    def invalidate(self, keys: Iterable[Any]) -> None:
        """Drop entries and fills in flight (keys as text or bytes)."""
        data = self._data
        watched = self._watched
        with self._lock:
            changed: list[str] = []
            for key in keys:
                if type(key) is bytes:
                    key = key.decode("utf-8", "surrogateescape")
                elif type(key) is not str:
                    continue
                if data.pop(key, None) is not None:
                    self.invalidations += 1
                if key in watched:
                    changed.append(key)
            if changed and self._expire_watchers(changed):
                # a new generation: every entry here is of the old one
                data.clear()
                self.flushes += 1

    def flush(self) -> None:
        """Drop everything, fills in flight included (a link lost, a FLUSHDB)."""
        with self._lock:
            self._data.clear()
            self.flushes += 1
            self._expire_watchers(None)

    def stop_serving(self) -> None:
        """The link is gone: serve nothing, drop everything."""
        with self._lock:
            self.serve_until = 0.0
            self._data.clear()
            self.flushes += 1
            self._expire_watchers(None)  # a bump meanwhile would go unheard

    def fence(self) -> float:
        """A write with keys unknown here just finished: serve nothing until a PING sent
        from now on is answered. The barrier's time."""
        with self._lock:
            self._barrier = now = self._clock()
            self.serve_until = 0.0
        return now

    def confirm(self, sent_at: float, limit: float = _FOREVER) -> None:
        """The answer to a PING sent at ``sent_at`` arrived, after every invalidation
        Redis sent before it (the link applied them in order). ``limit``: serve no longer
        than ``max_stale`` past it either (on a cluster, the last check that the links
        cover every primary)."""
        with self._lock:
            if sent_at >= self._barrier:
                until = min(sent_at, limit) + self.max_stale
                self.serve_until = max(self.serve_until, until)

    def serving(self) -> bool:
        return self._clock() < self.serve_until

    def __len__(self) -> int:
        return len(self._data)


def check_near_backend(backend: Any) -> Any:
    """Where a near layer listens: the sync backend's ``tracking()`` capability (see
    :mod:`cachekit.backends.base`): a client provider, or on a cluster one that also
    lists the primaries (``primaries()``: a link each)."""
    tracking = getattr(backend, "tracking", None)
    if not callable(tracking):
        raise ConfigurationError(
            "near=... needs a backend that reports invalidations (tracking(): a Redis URL "
            "redis://, rediss://, unix://, redis+sentinel://, redis+cluster:// or a redis-py "
            f"client), not {type(backend).__qualname__}"
        )
    return tracking()
