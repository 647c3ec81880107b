"""cachekit: one cache object, one ``@cached`` decorator, sync and async, memory and Redis.

    from cachekit import Cache, cached

    cache = Cache("redis://127.0.0.1:6379/0", prefix="shop", default_ttl=300)

    @cache.cached(ttl=60, key="user:{user_id}")
    def get_user(user_id: int) -> dict: ...
"""

from __future__ import annotations

from ._cache import Cache
from ._default import cached, get_default_cache, set_default_cache
from ._policy import DEFAULT
from ._sentinel import MISSING
from ._typing import CachedFunction
from .exceptions import (
    BackendError,
    BackendTimeoutError,
    BackendUnavailableError,
    CacheKitError,
    ConfigurationError,
    IncrementError,
    InvalidKeyError,
    LockError,
    LockNotOwnedError,
    LockTimeoutError,
    SerializationError,
)
from .serializers import Serializer

__version__ = "0.1.0"

__all__ = [
    "DEFAULT",
    "MISSING",
    "BackendError",
    "BackendTimeoutError",
    "BackendUnavailableError",
    "Cache",
    "CacheKitError",
    "CachedFunction",
    "ConfigurationError",
    "IncrementError",
    "InvalidKeyError",
    "LockError",
    "LockNotOwnedError",
    "LockTimeoutError",
    "SerializationError",
    "Serializer",
    "cached",
    "get_default_cache",
    "set_default_cache",
]
