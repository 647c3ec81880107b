"""What ``Cache.inspect(key)`` tells of an entry (:class:`EntryInfo`), decided from what
the backend holds, with no I/O: the sync and async readers
(``cachekit/kv/_async_inspect.py`` and its generated twin) fetch, this decodes.

The entry is decoded with the cache's own codec (serializer, secret, compression), as a
read would: what ``inspect`` calls decoded is what the cache would serve. Nothing is
counted as a hit or a miss.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..core.codec import Codec, CorruptEntry, UnsignedCounter, entry_layout

__all__ = ["EntryInfo", "describe"]

_NO_META: Mapping[str, Any] = {}


@dataclass(frozen=True)
class EntryInfo:
    """One entry, as ``Cache.inspect(key)`` found it.

    ``value``: the decoded value (None when ``decoded`` is false: ``note`` says why).
    ``ttl``: seconds left, None for no expiry. ``tags``: the tags it was stored with.
    ``metadata``: the rest of its metadata (``x``: the logical expiry of ``stale_ttl`` /
    ``early_refresh`` entries, as a Unix time). ``fresh_for``: seconds until that logical
    expiry (negative: served stale, refreshed on the next call), None without one.
    ``size``: bytes stored (None where an in-process store keeps the object itself).
    ``kind`` and ``flags``: its layout (:func:`cachekit.core.codec.entry_layout`).
    """

    key: Any
    full_key: str
    value: Any
    decoded: bool
    ttl: float | None
    tags: tuple[str, ...] = ()
    metadata: Mapping[str, Any] = field(default_factory=dict)
    fresh_for: float | None = None
    size: int | None = None
    kind: str = "value"
    flags: tuple[str, ...] = ()
    note: str | None = None

    @property
    def format(self) -> str:
        """The layout in words, e.g. ``"value with metadata (zlib, signed)"``."""
        if self.kind == "integer":
            return "integer (a counter, stored bare)"
        return self.kind + (f" ({', '.join(self.flags)})" if self.flags else "")


def is_bare_integer(stored: Any) -> bool:
    """Whether a stored form is a bare integer (a counter: INCRBY's digits, or memory's int)."""
    return entry_layout(stored)[0] == "integer"


def describe(
    codec: Codec,
    key: Any,
    full_key: str,
    stored: Any,
    ttl: float | None,
    counter_mark: Any,
    now: float,
) -> EntryInfo:
    """The :class:`EntryInfo` of ``stored`` (found under ``full_key``, ``ttl`` seconds
    left), decoded with ``codec``; ``counter_mark``: what the key's counter mark holds
    (asked only for a bare integer on a signing cache), ``now``: Unix time."""
    kind, flags = entry_layout(stored)
    size = len(stored) if isinstance(stored, bytes | bytearray | memoryview) else None
    base = {"key": key, "full_key": full_key, "ttl": ttl, "size": size, "kind": kind,
            "flags": flags}  # fmt: skip
    try:
        value, found = codec.loads_meta(stored, full_key)
    except UnsignedCounter as exc:
        if not codec.is_counter_mark(full_key, counter_mark):
            return EntryInfo(value=None, decoded=False, note=str(exc), **base)
        return EntryInfo(value=exc.value, decoded=True, note="a counter (under its mark)", **base)
    except CorruptEntry as exc:
        return EntryInfo(value=None, decoded=False, note=str(exc), **base)
    meta = found or _NO_META
    logical = meta.get("x")
    return EntryInfo(
        value=value,
        decoded=True,
        tags=tuple(meta.get("tags", ())),
        metadata={name: v for name, v in meta.items() if name != "tags"},
        fresh_for=round(logical - now, 3) if isinstance(logical, int | float) else None,
        **base,
    )
