"""``Cache.inspect`` / ``inspect``: the reads (entry, ttl, a bare integer's counter mark).

GENERATED from ``cachekit/kv/_async_inspect.py`` by
``scripts/unasync.py`` -- do not edit; edit the async source and run the script.
What the entry is, is decided in :mod:`cachekit.kv.inspection`.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from ..core.sentinel import MISSING
from .inspection import EntryInfo, describe, is_bare_integer

if TYPE_CHECKING:
    from .._cache import Cache

__all__ = ["inspect_entry"]


def inspect_entry(cache: Cache, key: Any) -> EntryInfo | None:
    """The entry under ``key`` described, or None when there is none. A failing backend
    (or an open circuit) raises :class:`~cachekit.BackendError`, whatever ``on_error``:
    "no entry" is never said for "could not look"."""
    full = cache.make_key(key)
    if cache._breaker.open:
        cache._breaker.resume()  # a cache used again after close() mid-outage
        raise cache._circuit_error()
    backend = cache._backend
    mark: Any = None
    try:
        stored = backend.get(full)
        if stored is MISSING:
            return None
        ttl = backend.ttl(full)
        if cache._codec.signed and is_bare_integer(stored):
            mark = backend.get(cache._counter_mark_key(full))
    except Exception as exc:
        raise cache._counted(exc) from exc
    if ttl is MISSING:  # expired between the two reads
        return None
    return describe(cache._codec, key, full, stored, ttl, mark, time.time())
