"""``Cache.inspect`` / ``ainspect``: the reads (entry, ttl, a bare integer's counter mark).

This file is the source: ``cachekit/kv/_sync_inspect.py`` is generated from it by
``scripts/unasync.py`` (CI fails when they drift). Edit here, then run the script.
What the entry is, is decided in :mod:`cachekit.kv.inspection`.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from ..core.sentinel import MISSING
from .inspection import EntryInfo, describe, is_bare_integer

if TYPE_CHECKING:
    from .._cache import Cache

__all__ = ["ainspect_entry"]


async def ainspect_entry(cache: Cache, key: Any) -> EntryInfo | None:
    """The entry under ``key`` described, or None when there is none. A failing backend
    (or an open circuit) raises :class:`~cachekit.BackendError`, whatever ``on_error``:
    "no entry" is never said for "could not look"."""
    full = cache.make_key(key)
    if cache._breaker.open:
        cache._breaker.resume()  # a cache used again after close() mid-outage
        raise cache._circuit_error()
    backend = cache._abackend
    mark: Any = None
    try:
        stored = await backend.get(full)
        if stored is MISSING:
            return None
        ttl = await backend.ttl(full)
        if cache._codec.signed and is_bare_integer(stored):
            mark = await backend.get(cache._counter_mark_key(full))
    except Exception as exc:
        raise cache._counted(exc) from exc
    if ttl is MISSING:  # expired between the two reads
        return None
    return describe(cache._codec, key, full, stored, ttl, mark, time.time())
