"""The stored form of a response (`CachedResponse`) and of a Vary marker: bytes in,
bytes out; `load` never raises. Pure."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING

import orjson

from .keys import cache_key

if TYPE_CHECKING:
    from .rules import Request

Headers = tuple[tuple[str, str], ...]

_ENTRY_MAGIC = b"CKH1"
_MARKER_MAGIC = b"CKV1"
_LENGTH = struct.Struct(">I")
_META_FIELDS: tuple[str, ...] = ("status", "headers", "stored_at", "lifetime", "initial_age")
_META_FIELDS += ("tags", "vary_names", "vary_values", "etag", "last_modified")


@dataclass(frozen=True, slots=True)
class CachedResponse:
    """A stored response. Its age is `initial_age` plus the time since `stored_at`."""

    status: int
    headers: Headers
    body: bytes
    stored_at: float
    lifetime: float  # freshness lifetime in seconds (RFC 9111 4.2.1)
    initial_age: float = 0.0  # corrected_initial_age (RFC 9111 4.2.3)
    tags: tuple[str, ...] = ()
    vary_names: tuple[str, ...] = ()
    vary_values: tuple[str | None, ...] = ()  # the request's values; None: header absent
    etag: str | None = None
    last_modified: float | None = None  # unix time

    def age(self, now: float) -> float:
        return self.initial_age + max(0.0, now - self.stored_at)

    def ttl(self, now: float) -> float:
        """Remaining freshness in seconds; <= 0 when stale."""
        return self.lifetime - self.age(now)

    def to_bytes(self) -> bytes:
        # Metadata as one orjson array, then the body raw: no base64 on the hit path.
        meta = orjson.dumps([getattr(self, name) for name in _META_FIELDS])
        return b"".join((_ENTRY_MAGIC, _LENGTH.pack(len(meta)), meta, self.body))

    @classmethod
    def from_bytes(cls, data: bytes) -> CachedResponse:
        """Decode `to_bytes` output; raises ValueError on anything else."""
        if data[:4] != _ENTRY_MAGIC or len(data) < 8:
            raise ValueError("not a cachekit HTTP entry")
        (size,) = _LENGTH.unpack_from(data, 4)
        meta = orjson.loads(data[8 : 8 + size])
        if not isinstance(meta, list) or len(meta) != 10:
            raise ValueError("corrupt cachekit HTTP entry")
        status, headers, stored_at, lifetime, initial_age, tags, names, values, etag, lm = meta
        if not (
            isinstance(status, int)
            and isinstance(headers, list)
            and all(isinstance(x, float | int) for x in (stored_at, lifetime, initial_age))
            and isinstance(values, list)
            and all(isinstance(v, str | None) for v in values)
            and isinstance(etag, str | None)
            and isinstance(lm, float | int | None)
        ):
            raise ValueError("corrupt cachekit HTTP entry")
        pairs = tuple((name, value) for name, value in headers)
        if not all(isinstance(name, str) and isinstance(value, str) for name, value in pairs):
            raise ValueError("corrupt cachekit HTTP entry")
        return cls(
            status,
            pairs,
            bytes(data[8 + size :]),
            float(stored_at),
            float(lifetime),
            float(initial_age),
            _strings(tags),
            _strings(names),
            tuple(values),
            etag,
            None if lm is None else float(lm),
        )


def _strings(value: object) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ValueError("corrupt cachekit HTTP entry")
    return tuple(value)


@dataclass(frozen=True, slots=True)
class VaryMarker:
    """Stored under the primary key when responses vary: which request headers select."""

    names: tuple[str, ...]

    def variant_key(self, req: Request, prefix: str = "") -> str:
        return cache_key(req, self.names, prefix)

    def to_bytes(self) -> bytes:
        return _MARKER_MAGIC + orjson.dumps(self.names)

    @classmethod
    def from_bytes(cls, data: bytes) -> VaryMarker:
        if data[:4] != _MARKER_MAGIC:
            raise ValueError("not a cachekit Vary marker")
        return cls(_strings(orjson.loads(data[4:])))


def load(data: bytes | None) -> CachedResponse | VaryMarker | None:
    """Decode what a backend returned; None for a miss or a corrupt value (never raises)."""
    if not data:
        return None
    try:
        if data[:4] == _MARKER_MAGIC:
            return VaryMarker.from_bytes(data)
        return CachedResponse.from_bytes(data)
    except (ValueError, TypeError, struct.error):
        return None
