"""Backends: where entries live. See :mod:`cachekit.backends.base` for the contract."""

from typing import Any
from urllib.parse import urlsplit

from .base import AsyncBackend, Backend
from .memory.store import AsyncMemoryBackend, MemoryBackend

__all__ = ["AsyncBackend", "AsyncMemoryBackend", "Backend", "MemoryBackend", "backends_for"]


def backends_for(
    url: str,
    client: Any,
    timeout: float | None,
    connect_timeout: float | None,
    max_entries: int,
    eviction: str = "lru",
) -> tuple[Any, Any]:
    """The sync/async backend pair for a cache URL (``memory://`` or a Redis one) or a
    redis-py ``client``: which backend a URL means is decided here, once."""
    if client is None and urlsplit(url).scheme == "memory":
        memory = MemoryBackend(max_entries, eviction=eviction)
        return memory, AsyncMemoryBackend(memory)
    from .redis import topology  # redis-py is imported only for a Redis cache

    if client is not None:
        return topology.backends_for_client(client, timeout, connect_timeout)
    return topology.backends_for_url(url, timeout, connect_timeout)
