"""The Redis backend (redis-py; ``fakeredis://`` in process): the only code that talks to
redis-py clients.

- :mod:`.topology`: which client classes, pools and retry policy (standalone, Sentinel,
  Cluster: redis-py's clients) and the sync/async backend pair.
- :mod:`.clients`: the providers holding this thread's / event loop's client, and the one
  translation of redis-py's errors into cachekit's.
- ``_async_backend`` (source) / ``_sync_backend`` (generated): the key/value contract and
  the capabilities of :mod:`cachekit.backends.base` (``RedisAccess``); on a cluster,
  ``RedisClusterBackend`` splits commands on many keys by slot.
"""

from __future__ import annotations

from ._async_backend import AsyncRedisAccess, AsyncRedisBackend, AsyncRedisClusterBackend
from ._sync_backend import RedisAccess, RedisBackend, RedisClusterBackend
from .clients import AsyncClientProvider, SyncClientProvider, client_options, translate_error
from .topology import backends_for_client, backends_for_url

__all__ = [
    "AsyncClientProvider",
    "AsyncRedisAccess",
    "AsyncRedisBackend",
    "AsyncRedisClusterBackend",
    "RedisAccess",
    "RedisBackend",
    "RedisClusterBackend",
    "SyncClientProvider",
    "backends_for_client",
    "backends_for_url",
    "client_options",
    "translate_error",
]
