"""W-TinyLFU eviction for the memory backend: pure data structures, no I/O, no clock.

After Einziger, Friedman & Manes, "TinyLFU: A Highly Efficient Cache Admission Policy"
(2017), as laid out in Caffeine:

- :class:`FrequencySketch`: a count-min sketch (4 counters a key, in one block) of 4-bit
  counters (saturating at 15), halved every ``10 * capacity`` increments so that old
  popularity fades, with an optional doorkeeper (a Bloom filter that absorbs each key's
  first occurrence).
- :class:`WTinyLFU`: which keys are cached. New keys enter a small admission window (an
  LRU, ~1% of the capacity); the window's LRU key then competes with the main space's
  victim (the LRU key of its probation segment) and enters only if the sketch says it is
  the more frequent of the two. A key read again while in probation moves to the protected
  segment (~80% of the main space), whose overflow falls back to probation.
- :class:`TinyLFUEntries`: the memory backend's entry dict (key -> ``(value, expires_at)``)
  kept in step with a :class:`WTinyLFU`. It is a ``dict`` (so the lock-free ``get`` of the
  hit path is the C one) that answers the two ``OrderedDict`` calls the backend makes:
  ``move_to_end(key)`` records a read (as :meth:`~TinyLFUEntries.record_read`, which the
  backend's reader calls on a hit), ``popitem(last=False)`` evicts the policy's victim.

Reads stay lock-free: a hit only appends its key to a buffer (one atomic ``list.append``
under the GIL). The buffer is replayed into the sketch and the segments under the
backend's lock, by the next write or eviction, or by a reader that finds it long and the
lock free. Reads appended while another thread swaps the buffer out may be lost; like
Caffeine's read buffers, the policy is allowed to miss a few reads, never to corrupt.
"""

from __future__ import annotations

import threading
from collections import Counter, OrderedDict
from collections.abc import Hashable, Iterable, Sequence
from typing import Any, Generic, NoReturn, TypeVar

__all__ = ["FrequencySketch", "TinyLFUEntries", "WTinyLFU"]

_MAX_COUNT = 15  # a 4-bit counter
_HALVE = bytes(i >> 1 for i in range(256))  # bytearray.translate table: every counter // 2
# a key's four counters within its block of 16, one per quarter, from 8 bits of its hash
_OFFSETS = tuple(
    (h & 3, 4 + ((h >> 2) & 3), 8 + ((h >> 4) & 3), 12 + ((h >> 6) & 3)) for h in range(256)
)
_SATURATE = bytes(min(i, _MAX_COUNT) for i in range(2 * _MAX_COUNT + 1))  # count + times
_SPREAD = 0x9E3779B97F4A7C15  # 2**64 / golden ratio: spreads ints, whose hash is themselves
_M64 = (1 << 64) - 1

K = TypeVar("K", bound=Hashable)


def _power_of_two_at_least(n: int) -> int:
    return 1 << max(0, n - 1).bit_length()


class FrequencySketch:
    """Approximate access counts of the last ``~10 * capacity`` accesses.

    A count-min sketch laid out in blocks, as Caffeine does: a key's hash picks one block
    of 16 one-byte counters (one block per entry of capacity, rounded up to a power of
    two) and one counter in each quarter of it; its estimate is the minimum of those four,
    so collisions can only over-count. Counters are capped at 15 (4 bits of information).
    Every ``sample_size`` increments all counters are halved (aging).
    """

    def __init__(
        self, capacity: int, *, sample_size: int | None = None, doorkeeper: bool = False
    ) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.blocks = _power_of_two_at_least(capacity)
        self._block_mask = self.blocks - 1
        self.sample_size = sample_size if sample_size is not None else 10 * capacity
        self.additions = 0  # increments since the last halving
        self.resets = 0
        self._table = bytearray(16 * self.blocks)
        self._doorkeeper: bytearray | None = bytearray(16 * self.blocks) if doorkeeper else None

    def _indexes(self, key: Hashable) -> tuple[int, int, int, int]:
        h = hash(key)
        if type(key) is not str:  # str hashes are SipHash; an int's hash is itself
            h = (h * _SPREAD) & _M64
        base = (h & self._block_mask) << 4
        a, b, c, d = _OFFSETS[(h >> 40) & 255]  # bits the block choice did not use
        return base + a, base + b, base + c, base + d

    def estimate(self, key: Hashable) -> int:
        """How often ``key`` was seen recently (an over-estimate at worst), 0..15 (16 with
        the doorkeeper)."""
        a, b, c, d = self._indexes(key)
        table = self._table
        count = min(table[a], table[b], table[c], table[d])
        doorkeeper = self._doorkeeper
        if doorkeeper is not None and doorkeeper[a] and doorkeeper[b] and doorkeeper[c]:
            count += 1
        return count

    def increment(self, key: Hashable, times: int = 1) -> None:
        """Count ``times`` accesses to ``key``."""
        a, b, c, d = self._indexes(key)
        doorkeeper = self._doorkeeper
        if doorkeeper is not None and not (doorkeeper[a] and doorkeeper[b] and doorkeeper[c]):
            # the first access only marks the doorkeeper: one-hit wonders leave the
            # counters alone
            doorkeeper[a] = doorkeeper[b] = doorkeeper[c] = 1
            times -= 1
            if times <= 0:
                return
        table = self._table
        for index in (a, b, c, d):
            count = table[index] + times
            table[index] = count if count < _MAX_COUNT else _MAX_COUNT
        self.additions += times
        if self.additions >= self.sample_size:
            self.age()

    def increment_all(self, counted: Iterable[tuple[Hashable, int]]) -> None:
        """:meth:`increment` for each ``(key, times)``: the same counts, inlined (a drain of
        the read buffer runs this for every hit)."""
        if self._doorkeeper is not None:
            for key, times in counted:
                self.increment(key, times)
            return
        table, block_mask = self._table, self._block_mask
        saturate, offsets, most = _SATURATE, _OFFSETS, _MAX_COUNT  # locals: the hot loop
        added = 0
        for key, times in counted:
            h = hash(key)
            if type(key) is not str:
                h = (h * _SPREAD) & _M64
            base = (h & block_mask) << 4
            a, b, c, d = offsets[(h >> 40) & 255]
            if times > most:
                times = most
            added += times
            a += base
            table[a] = saturate[table[a] + times]
            b += base
            table[b] = saturate[table[b] + times]
            c += base
            table[c] = saturate[table[c] + times]
            d += base
            table[d] = saturate[table[d] + times]
        self.additions += added
        if self.additions >= self.sample_size:
            self.age()

    def age(self) -> None:
        """Halve every counter and forget the doorkeeper (called every ``sample_size``
        increments)."""
        self._table = self._table.translate(_HALVE)
        if self._doorkeeper is not None:
            self._doorkeeper = bytearray(len(self._doorkeeper))
        self.additions //= 2
        self.resets += 1


class WTinyLFU(Generic[K]):
    """Which keys a cache of ``capacity`` entries keeps: see the module docstring.

    ``insert(key)`` a new key (then ``evict()`` while ``len(self) > capacity``),
    ``access(key, times)`` a read, ``remove(key)`` a deletion. Not thread-safe: the caller
    serialises calls.
    """

    def __init__(
        self,
        capacity: int,
        *,
        window_fraction: float = 0.01,
        protected_fraction: float = 0.8,
        doorkeeper: bool = False,
    ) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self.window_max = max(1, round(capacity * window_fraction))
        self.main_max = max(0, capacity - self.window_max)
        self.protected_max = int(self.main_max * protected_fraction)
        self.sketch = FrequencySketch(capacity, doorkeeper=doorkeeper)
        self.window: OrderedDict[K, None] = OrderedDict()
        self.probation: OrderedDict[K, None] = OrderedDict()
        self.protected: OrderedDict[K, None] = OrderedDict()
        # keys moved from the window into probation while the cache is over capacity:
        # each must beat probation's LRU key to stay
        self._candidates: list[K] = []
        self.admitted = 0
        self.rejected = 0

    def __len__(self) -> int:
        return len(self.window) + len(self.probation) + len(self.protected)

    def __contains__(self, key: object) -> bool:
        return key in self.window or key in self.probation or key in self.protected

    def insert(self, key: K) -> None:
        """A new key enters the window; the window's overflow moves to probation."""
        window = self.window
        window[key] = None
        while len(window) > self.window_max:
            moved, _ = window.popitem(last=False)
            self.probation[moved] = None
            self._candidates.append(moved)
        if len(self) <= self.capacity:
            self._candidates.clear()  # room enough: admitted without a contest

    def access(self, key: K, times: int = 1) -> None:
        """``key`` was read ``times`` times (the last of them the most recent access)."""
        self.sketch.increment(key, times)
        if key in self.window:
            self.window.move_to_end(key)
        elif key in self.probation:
            del self.probation[key]
            protected = self.protected
            protected[key] = None
            while len(protected) > self.protected_max:
                demoted, _ = protected.popitem(last=False)
                self.probation[demoted] = None
        elif key in self.protected:
            self.protected.move_to_end(key)

    def access_all(self, reads: Sequence[K]) -> None:
        """:meth:`access` for each key of ``reads``, in order (oldest first)."""
        if len(reads) == 1:
            self.access(reads[0])
            return
        counts = Counter(reads)
        self.sketch.increment_all(counts.items())
        window, probation, protected = self.window, self.probation, self.protected
        promoted = False
        # by last occurrence, oldest first, so that recency within a segment stays right
        for key in reversed(dict.fromkeys(reversed(reads))):
            if key in protected:
                protected.move_to_end(key)
            elif key in window:
                window.move_to_end(key)
            elif key in probation:
                del probation[key]
                protected[key] = None
                promoted = True
        if promoted:
            while len(protected) > self.protected_max:
                demoted, _ = protected.popitem(last=False)
                probation[demoted] = None

    def remove(self, key: K) -> None:
        for segment in (self.window, self.probation, self.protected):
            if segment.pop(key, 0) is None:
                return

    def evict(self) -> K:
        """Choose, forget and return the key to evict. Needs a non-empty policy."""
        probation, candidates = self.probation, self._candidates
        while candidates:
            candidate = candidates.pop(0)
            if candidate not in probation:  # read (now protected) or removed since
                continue
            victim = next(iter(probation))
            if victim == candidate:
                loser = victim
            elif self.sketch.estimate(candidate) > self.sketch.estimate(victim):
                loser = victim
                self.admitted += 1
            else:
                loser = candidate
                self.rejected += 1
            del probation[loser]
            if len(self) <= self.capacity:
                candidates.clear()
            return loser
        for segment in (probation, self.protected, self.window):
            if segment:
                return segment.popitem(last=False)[0]
        raise KeyError("evict(): the policy holds no key")


class TinyLFUEntries(dict[str, tuple[Any, float]]):
    """The memory backend's ``key -> (value, expires_at)`` dict, evicting by W-TinyLFU.

    Mutate it only through ``[key] = ``, ``del``, ``pop``, ``popitem(last=False)``,
    ``clear`` and ``move_to_end`` (all but ``move_to_end`` under ``lock``): those keep the
    policy in step with the keys.
    """

    def __init__(
        self,
        capacity: int,
        lock: threading.Lock,
        *,
        doorkeeper: bool = False,
        drain_at: int = 64,
    ) -> None:
        super().__init__()
        self.policy: WTinyLFU[str] = WTinyLFU(capacity, doorkeeper=doorkeeper)
        self._lock = lock
        self._reads: list[str] = []
        self._drain_at = drain_at

    # -- the read side (lock-free) --------------------------------------------------------
    def record_read(self, key: str) -> None:
        """Record a hit on ``key`` (what :meth:`MemoryBackend.reader
        <cachekit.backends.memory.MemoryBackend.reader>` calls where an LRU moves the key to
        its end): one list append; every ``drain_at`` reads, a replay into the policy if
        the lock is free."""
        reads = self._reads
        reads.append(key)
        if len(reads) >= self._drain_at and self._lock.acquire(blocking=False):
            try:
                self._drain()
            finally:
                self._lock.release()

    def move_to_end(self, key: str, last: bool = True) -> None:
        """``OrderedDict``'s name for the same (the backend's writes call it on both)."""
        self.record_read(key)

    def _drain(self) -> None:
        # caller holds the lock
        reads = self._reads
        if not reads:
            return
        self._reads = []
        self.policy.access_all(reads)

    # -- the write side (under the backend's lock) ---------------------------------------
    def __setitem__(self, key: str, entry: tuple[Any, float]) -> None:
        is_new = key not in self
        super().__setitem__(key, entry)
        if is_new:
            self.policy.insert(key)

    def __delitem__(self, key: str) -> None:
        super().__delitem__(key)
        self.policy.remove(key)

    def pop(self, key: str, *default: Any) -> Any:
        if key in self:
            self.policy.remove(key)
        return super().pop(key, *default)

    def popitem(self, last: bool = True) -> tuple[str, tuple[Any, float]]:
        """Evict: remove and return the policy's victim (``last`` is ignored)."""
        self._drain()  # fresh frequencies before a contest
        key = self.policy.evict()
        return key, super().pop(key)

    def clear(self) -> None:
        super().clear()
        policy = self.policy
        for segment in (policy.window, policy.probation, policy.protected):
            segment.clear()
        self._reads = []

    def _unsupported(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise TypeError("TinyLFUEntries: mutate through [key] =, del, pop or popitem")

    update = setdefault = _unsupported

    def keys_in_policy(self) -> list[str]:
        """Every key the policy tracks (for tests: the same set as the dict's keys)."""
        policy = self.policy
        return [*policy.window, *policy.probation, *policy.protected]
