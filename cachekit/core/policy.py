"""The decisions shared by the sync and async key/value API (no I/O here).

:class:`CachePolicy` is the base of the generated ``CacheOps`` and of
``AsyncCacheOps``; it owns what both need: key namespacing, TTL rules, encoding, and the
error policy (fail open and count, or raise; trip the circuit breaker on outages).
"""

from __future__ import annotations

import logging
import numbers
import operator
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from ..exceptions import (
    BackendError,
    BackendTimeoutError,
    BackendUnavailableError,
    CacheKitError,
    InvalidArgumentError,
    SerializationError,
)
from .codec import Codec, CorruptEntry, UnsignedCounter
from .keys import Namespace, escape_glob, internal_head
from .sentinel import MISSING

if TYPE_CHECKING:
    from ..write.strategies import WriteStrategies
    from .breaker import CircuitBreaker
    from .generation import Generation

__all__ = ["DEFAULT", "FOREVER", "CachePolicy", "Counters", "incr_delta", "ttl_seconds"]

logger = logging.getLogger(__name__)


class _Default:
    def __repr__(self) -> str:
        return "DEFAULT"


DEFAULT: Final[Any] = _Default()
"""``ttl=DEFAULT`` (the default) means the cache's ``default_ttl``."""


FOREVER: Final = 1e12
"""A ttl of this many seconds (about 31,700 years) or more, ``inf`` included, is no expiry:
beyond what Redis can store (its PX plus the clock must fit in 63 bits of milliseconds)."""


def ttl_seconds(ttl: Any) -> float | None:
    """The one TTL rule, for every path that stores (set, add, set_many, expire, incr,
    get_or_set, ``@cached``, the write strategies) and for ``default_ttl``.

    ``None``: no expiry. A real number or a ``timedelta``: seconds; ``0`` or less means
    "do not keep" (a set deletes, as in Django and Redis' EXPIRE), returned as ``0``;
    ``inf`` or at least :data:`FOREVER` means no expiry (``None``), so memory and Redis
    agree. NaN, bools and anything else raise :class:`InvalidArgumentError`.
    """
    kind = type(ttl)
    if kind is not int and kind is not float:  # the common cases skip these checks
        if ttl is None:
            return None
        if hasattr(ttl, "total_seconds"):
            ttl = ttl.total_seconds()
        if isinstance(ttl, bool) or not isinstance(ttl, numbers.Real):
            raise InvalidArgumentError(
                f"ttl must be seconds (int, float, timedelta) or None, not {ttl!r}"
            )
        ttl = float(ttl)
    if ttl > 0:
        return ttl if ttl < FOREVER else None
    if ttl <= 0:
        return 0
    raise InvalidArgumentError("ttl must be seconds or None, not NaN")  # NaN: neither


def incr_delta(delta: Any) -> int:
    """``incr``'s delta: an int (or an integral number type), never a bool or a float,
    which Redis would refuse or the memory backend would truncate."""
    if isinstance(delta, bool):
        raise InvalidArgumentError(f"incr() takes an int delta, not {delta!r}")
    try:
        return operator.index(delta)
    except TypeError:
        raise InvalidArgumentError(f"incr() takes an int delta, not {delta!r}") from None


@dataclass
class Counters:
    """Counts since the cache was made. Plain ints: under heavy threading a few
    increments may be lost, which is fine for statistics and keeps the hit path cheap."""

    hits: int = 0
    misses: int = 0
    sets: int = 0
    errors: int = 0
    skipped: int = 0
    corrupt: int = 0
    unencodable: int = 0
    stale: int = 0  # stale values served (stale_ttl while refreshing, stale_if_error)
    joins: int = 0  # callers that waited for a computation in flight in this process
    lock_waits: int = 0  # callers that waited for another process's lock holder


class CachePolicy:
    # provided by Cache
    _generation: Generation  # the namespace generation known; its .ns holds the entries
    _base_ns: Namespace  # the namespace at generation 0 (locks, queues, rate limits)
    _codec: Codec
    _breaker: CircuitBreaker

    @property
    def _ns(self) -> Namespace:
        """The namespace of entries, at the generation this process knows now."""
        return self._generation.ns

    _raise_errors: bool
    default_ttl: float | None
    counters: Counters
    if TYPE_CHECKING:
        _backend: Any
        _abackend: Any
        _writes: WriteStrategies

    # -- TTL and encoding -------------------------------------------------------------
    def _seconds(self, ttl: Any) -> float | None:
        """Seconds to keep an entry: None for no expiry, 0 for "do not keep" (see
        :func:`ttl_seconds`; ``default_ttl`` went through it at construction)."""
        if ttl is DEFAULT:
            return self.default_ttl
        return ttl_seconds(ttl)

    def _encode(self, value: Any, tags: Iterable[str] | None, key: str) -> Any:
        """The stored form of ``value`` under the full ``key`` (a signed entry is bound to it)."""
        if tags:
            return self._codec.dumps(value, {"tags": sorted(set(tags))}, key)
        return self._codec.dumps(value, None, key)

    def _prepare(
        self, key: Any, value: Any, ttl: Any, tags: Iterable[str] | None
    ) -> tuple[str, float | None, Any]:
        full = self._ns.key(key)
        if self._is_counter(value, tags):
            return full, self._seconds(ttl), self._codec.counter(value)
        return full, self._seconds(ttl), self._encode(value, tags, full)

    def _is_counter(self, value: Any, tags: Iterable[str] | None) -> bool:
        """With a secret, an int given to set()/add()/set_many() is stored as a counter
        (bare, so incr() works on it) under a counter mark (see :mod:`cachekit.core.codec`)."""
        return self._codec.signed and type(value) is int and not tags

    def _counter_mark_key(self, full: str) -> str:
        text = self._generation.text_of(full)  # the mark of the entry's own generation
        return internal_head(text, "counter") + full[len(text) :]

    def _counter_marks_pattern(self, pattern: str) -> str:
        """The glob over the counter marks of the entries ``self._ns.pattern(pattern)``
        matches (marks are internal keys: outside the namespace's own patterns)."""
        return escape_glob(self._ns.internal("counter")) + pattern

    def _prepare_many(
        self, mapping: Mapping[Any, Any], ttl: Any, tags: Iterable[str] | None
    ) -> tuple[dict[str, Any], float | None]:
        seconds = self._seconds(ttl)
        items = {}
        for key, value in mapping.items():
            full = self._ns.key(key)
            if self._is_counter(value, tags):
                items[full] = self._codec.counter(value)
            else:
                items[full] = self._encode(value, tags, full)
        return items, seconds

    def _decode_many(
        self,
        wanted: Sequence[Any],
        full: Sequence[str],
        stored: Sequence[Any],
        counters: dict[Any, tuple[str, UnsignedCounter]] | None = None,
    ) -> dict[Any, Any]:
        """The values found; bare integers under a secret go to ``counters`` (their
        counter marks are checked by the caller, with one more round trip)."""
        found: dict[Any, Any] = {}
        for key, full_key, raw in zip(wanted, full, stored):
            if raw is MISSING:
                self.counters.misses += 1
                continue
            try:
                found[key] = self._codec.loads(raw, full_key)
            except UnsignedCounter as exc:
                if counters is None:
                    self._corrupt(full_key, exc)
                else:
                    counters[key] = (full_key, exc)
                continue
            except CorruptEntry as exc:
                self._corrupt(full_key, exc)
                continue
            self.counters.hits += 1
        return found

    # -- the error policy -------------------------------------------------------------
    def _circuit_error(self) -> BackendUnavailableError:
        return BackendUnavailableError("the cache backend is unavailable (circuit open)")

    def _skip(self, default: Any) -> Any:
        """The circuit is open: do not touch the backend."""
        self._breaker.resume()  # a cache used again after close() mid-outage
        if self._raise_errors:
            raise self._circuit_error()
        self.counters.skipped += 1
        return default

    def _counted(self, exc: BaseException) -> CacheKitError:
        """Translate a backend exception, count it, and trip the breaker on outages."""
        error = self._backend_translate(exc)
        if isinstance(error, BackendError):
            self.counters.errors += 1
            if isinstance(error, (BackendUnavailableError, BackendTimeoutError)):
                self._breaker.trip(error)
            elif not self._raise_errors:
                logger.warning("%s", error)
        return error

    def _failed(self, exc: BaseException, default: Any) -> Any:
        error = self._counted(exc)
        if self._raise_errors or not isinstance(error, BackendError):
            raise error from exc
        return default

    def _backend_translate(self, exc: BaseException) -> CacheKitError:
        if isinstance(exc, CacheKitError):
            return exc
        error: CacheKitError = self._translate_error(exc)
        return error

    _translate_error: Any

    def _corrupt(self, key: str, exc: Exception) -> Any:
        self.counters.corrupt += 1
        logger.warning("ignoring unreadable entry %r (%s)", key, exc)
        return MISSING

    def _unencodable(self, key: str, exc: SerializationError) -> bool:
        if self._raise_errors:
            raise exc
        self.counters.unencodable += 1
        logger.warning("not caching %r: %s", key, exc)
        return False
