"""``cache.lock(name, ttl=, timeout=, blocking=)``: one object for ``with`` and ``async with``.

On Redis it is redis-py's ``Lock`` (a random owner token stored with ``SET NX PX``,
released and extended by compare-and-delete Lua scripts, always with an expiry); on the
memory backend the in-process equivalent in :mod:`cachekit.backends.memory.lock`.
Unlike cache reads, lock operations never fail open: a backend error raises
:class:`~cachekit.BackendError` (a lock that silently was not taken would be worse).

Key: the lock of name ``n`` is ``#{prefix}:{version}:lock:{<full key of n>}`` (see
:mod:`cachekit.stampede.rules`), among the cache's internal keys (``clear()`` never deletes a
held lock) and in the cluster slot of the entry ``n``; it is the same lock
``@cached(lock=True)`` takes for that entry.
"""

from __future__ import annotations

import uuid
from typing import Any

from ..exceptions import InvalidArgumentError, LockError, LockNotOwnedError, LockTimeoutError
from ..stampede.rules import companion_key, valid_lock_ttl
from ._async_lock import AsyncLockOps
from ._sync_lock import LockOps

__all__ = ["CacheLock"]


class CacheLock(LockOps, AsyncLockOps):
    """A named lock: ``acquire``/``release``/``extend``/``locked``/``owned`` and their
    ``a``-prefixed coroutine twins; a context manager for ``with`` and ``async with``."""

    def __init__(
        self, cache: Any, name: Any, ttl: float, timeout: float | None, blocking: bool
    ) -> None:
        if not valid_lock_ttl(ttl):
            raise InvalidArgumentError(
                f"a lock needs a ttl of seconds from 0.001 up, finite (it always expires), "
                f"not {ttl!r}"
            )
        self._cache = cache
        self.name = name
        self.key = companion_key(cache.namespace.text, "lock", cache.namespace.key(name))
        self.ttl = float(ttl)
        self.timeout = timeout
        self.blocking = blocking
        self._held: Any = None
        self.token: bytes | None = None

    def _new_token(self) -> bytes:
        self.token = uuid.uuid4().hex.encode()
        return self.token

    def _translated(self, exc: Exception) -> Exception:
        if isinstance(exc, LockError):
            return exc
        # the backend's own lock errors arrive translated (its translate_error): named here
        error: Exception = self._cache._backend_translate(exc)
        if isinstance(error, LockNotOwnedError):
            return LockNotOwnedError(f"lock {self.name!r} is no longer held by this owner")
        if isinstance(error, LockError):
            return LockError(f"lock {self.name!r}: {error}")
        return error

    def _timed_out(self, waited: float | None) -> Exception:
        return LockTimeoutError(f"lock {self.name!r} not acquired within {waited} s")

    def __repr__(self) -> str:
        state = "held" if self._held is not None else "not held"
        return f"<CacheLock {self.name!r} ttl={self.ttl} {state}>"
