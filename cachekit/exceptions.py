"""Every error cachekit raises derives from one root, :class:`CacheKitError`.

    CacheKitError
    ├── ConfigurationError (ValueError)      bad URL, option or combination of options
    ├── InvalidKeyError (TypeError)          a key cachekit cannot turn into a string
    ├── SerializationError (ValueError)      a value the serializer cannot encode
    ├── IncrementError (ValueError)          incr() on a value that is not an integer
    ├── InvalidArgumentError (TypeError, ValueError)  an operation argument refused: a ttl
    │                                        that is not seconds, an incr() delta not an int
    ├── BackendError                         the backend failed (only with on_error="raise")
    │   ├── BackendUnavailableError (ConnectionError)
    │   └── BackendTimeoutError (TimeoutError)
    ├── LockError
    │   ├── LockNotOwnedError                release/extend of a lock this caller does not hold
    │   └── LockTimeoutError (TimeoutError)  the lock could not be acquired in time
    └── RateLimited                          a @cache.rate_limit call refused (has .decision)

Errors of lower layers (redis-py, sockets, serializers) are translated in exactly one
place per layer and chained with ``raise ... from exc``, so ``__cause__`` keeps the
original.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "BackendError",
    "BackendTimeoutError",
    "BackendUnavailableError",
    "CacheKitError",
    "ConfigurationError",
    "IncrementError",
    "InvalidArgumentError",
    "InvalidKeyError",
    "LockError",
    "LockNotOwnedError",
    "LockTimeoutError",
    "RateLimited",
    "SerializationError",
]


class CacheKitError(Exception):
    """Root of every error raised by cachekit."""


class ConfigurationError(CacheKitError, ValueError):
    """A URL, option or combination of options that cannot work."""


class InvalidKeyError(CacheKitError, TypeError):
    """A key that cannot be turned into a cache key string."""


class SerializationError(CacheKitError, ValueError):
    """A value the configured serializer cannot encode (nothing was written)."""


class IncrementError(CacheKitError, ValueError):
    """``incr()`` on an entry that does not hold an integer."""


class InvalidArgumentError(CacheKitError, TypeError, ValueError):
    """An operation argument cachekit refuses: a ``ttl`` that is not seconds or None (NaN,
    a string, a bool), an ``incr()`` delta that is not an int. Nothing was stored.

    Both a TypeError and a ValueError, so either ``except`` catches it."""


class BackendError(CacheKitError):
    """The backend failed. Raised only when the cache was built with ``on_error="raise"``."""


class BackendUnavailableError(BackendError, ConnectionError):
    """The backend refused or dropped the connection, or the circuit breaker is open."""


class BackendTimeoutError(BackendError, TimeoutError):
    """The backend did not answer within the configured timeout."""


class LockError(CacheKitError):
    """A lock could not be acquired, released or extended."""


class LockNotOwnedError(LockError):
    """Release or extend of a lock the caller does not hold (expired, or someone else's)."""


class LockTimeoutError(LockError, TimeoutError):
    """The lock was not acquired within the timeout."""


class RateLimited(CacheKitError):
    """A call refused by a rate limit (``@cache.rate_limit``): ``decision`` is the
    limiter's :class:`~cachekit.ratelimit.Decision` (``retry_after`` seconds, ...)."""

    def __init__(self, name: str, decision: Any) -> None:
        super().__init__(
            f"rate limit {name!r} exceeded: retry after {decision.retry_after:.3f} s"
        )
        self.name = name
        self.decision = decision

    @property
    def retry_after(self) -> float:
        return float(self.decision.retry_after)

    def __reduce__(self) -> tuple[Any, ...]:  # pickles (across processes) with its decision
        return (type(self), (self.name, self.decision))
