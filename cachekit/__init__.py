"""cachekit: one cache object, one ``@cached`` decorator, sync and async, memory and Redis.

    from cachekit import Cache, cached

    cache = Cache("redis://127.0.0.1:6379/0", prefix="shop", default_ttl=300)

    @cache.cached(ttl=60, key="user:{user_id}")
    def get_user(user_id: int) -> dict: ...
"""

import pkgutil as _pkgutil
from types import FunctionType as _FunctionType

# The editable install (pyproject.toml: [tool.distutils.editable_wheel] mode = "strict")
# puts a tree of links on sys.path, in which integrations/ appears as
# cachekit/integrations/, so type checkers can follow it. Run from a checkout, the
# checkout's own cachekit/ comes first on sys.path and has no integrations/ folder: look
# for cachekit's submodules in every "cachekit" folder on sys.path. A regular install has
# one such folder, and this changes nothing.
__path__ = _pkgutil.extend_path(__path__, __name__)

from ._cache import Cache
from .core.policy import DEFAULT
from .core.sentinel import MISSING
from .decorator.default import cached, get_default_cache, set_default_cache
from .decorator.types import CachedFunction
from .exceptions import (
    BackendError,
    BackendTimeoutError,
    BackendUnavailableError,
    CacheKitError,
    ConfigurationError,
    IncrementError,
    InvalidArgumentError,
    InvalidKeyError,
    LockError,
    LockNotOwnedError,
    LockTimeoutError,
    RateLimited,
    SerializationError,
)
from .kv.inspection import EntryInfo
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
    "EntryInfo",
    "IncrementError",
    "InvalidArgumentError",
    "InvalidKeyError",
    "LockError",
    "LockNotOwnedError",
    "LockTimeoutError",
    "RateLimited",
    "SerializationError",
    "Serializer",
    "cached",
    "get_default_cache",
    "set_default_cache",
]

# Classes and functions defined in private modules show as cachekit.Name (in reprs,
# tracebacks and docs), the name users import them by: `cachekit._cache.Cache` is not API.
# Pickle still finds them, as cachekit.Name. (httpx does the same in its __init__.)
for _name in __all__:
    _member = globals()[_name]
    if isinstance(_member, type | _FunctionType) and _member.__module__.startswith("cachekit._"):
        _member.__module__ = __name__
del _name, _member
