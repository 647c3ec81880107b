"""How values are laid out in a backend.

Remote backends store bytes::

    0x01 payload                      a value
    0x02 len(meta):u16 meta payload   a value with metadata (tags, logical expiry, ...)
    +0x10 / +0x20 on the first byte   payload zlib- / zstd-compressed
    b"-?[0-9]+"                       an integer, stored bare so Redis INCR works on it

Anything else (a foreign or corrupt entry) raises :class:`CorruptEntry`; callers treat it
as a miss and log it. The in-process memory backend stores objects as they are
(:class:`ObjectCodec`), as cachetools and lru_cache do, unless a serializer is asked for.
"""

from __future__ import annotations

import zlib
from typing import Any

import orjson

from .exceptions import ConfigurationError, SerializationError
from .serializers import Serializer

__all__ = ["BytesCodec", "Codec", "CorruptEntry", "ObjectCodec"]

_PLAIN = 0x01
_META = 0x02
_ZLIB = 0x10
_ZSTD = 0x20
_KIND_MASK = 0x0F
_DIGITS = frozenset(b"-0123456789")


class CorruptEntry(Exception):
    """An entry cachekit cannot decode (foreign, truncated, tampered, other serializer)."""


class Codec:
    """Interface: ``dumps(value, meta) -> stored`` and ``loads(stored) -> value``."""

    stores_objects = False

    def dumps(self, value: Any, meta: dict[str, Any] | None = None) -> Any:
        raise NotImplementedError

    def loads(self, stored: Any) -> Any:
        raise NotImplementedError

    def loads_meta(self, stored: Any) -> tuple[Any, dict[str, Any] | None]:
        raise NotImplementedError


class Boxed:
    """An object stored in memory together with its metadata."""

    __slots__ = ("meta", "value")

    def __init__(self, value: Any, meta: dict[str, Any]) -> None:
        self.value = value
        self.meta = meta


class ObjectCodec(Codec):
    """Memory backend default: values are stored as the objects themselves (no copy)."""

    stores_objects = True

    def dumps(self, value: Any, meta: dict[str, Any] | None = None) -> Any:
        return value if meta is None else Boxed(value, meta)

    def loads(self, stored: Any) -> Any:
        return stored.value if type(stored) is Boxed else stored

    def loads_meta(self, stored: Any) -> tuple[Any, dict[str, Any] | None]:
        if type(stored) is Boxed:
            return stored.value, stored.meta
        return stored, None


def _zstd() -> Any:
    try:
        import zstandard
    except ImportError:
        return None
    return zstandard


class BytesCodec(Codec):
    """Serializer payload in a one-byte envelope, optionally compressed above a threshold."""

    def __init__(
        self,
        serializer: Serializer,
        *,
        compress: str | None = None,
        compress_threshold: int = 1024,
        compress_level: int | None = None,
    ) -> None:
        self.serializer = serializer
        self._dumps = serializer.dumps
        self._loads = serializer.loads
        self._threshold = compress_threshold
        zstd = _zstd()
        if compress == "auto":
            compress = "zstd" if zstd is not None else "zlib"
        if compress not in (None, "zlib", "zstd"):
            raise ConfigurationError(
                f"compress must be None, 'zlib', 'zstd' or 'auto', not {compress!r}"
            )
        if compress == "zstd" and zstd is None:
            raise ConfigurationError(
                "compress='zstd' needs the zstd extra: pip install 'cachekit[zstd]'"
            )
        self._compress_flag = {None: 0, "zlib": _ZLIB, "zstd": _ZSTD}[compress]
        level = compress_level
        self._zlib_level = 6 if level is None else level
        self._zstd_c = zstd.ZstdCompressor(level=3 if level is None else level) if zstd else None
        self._zstd_d = zstd.ZstdDecompressor() if zstd else None

    def _compress(self, payload: bytes) -> tuple[int, bytes]:
        if not self._compress_flag or len(payload) < self._threshold:
            return 0, payload
        if self._compress_flag == _ZLIB:
            return _ZLIB, zlib.compress(payload, self._zlib_level)
        assert self._zstd_c is not None
        return _ZSTD, self._zstd_c.compress(payload)

    def dumps(self, value: Any, meta: dict[str, Any] | None = None) -> Any:
        if meta is None and type(value) is int:
            return str(value).encode()
        flag, payload = self._compress(self._dumps(value))
        if meta is None:
            return bytes((_PLAIN | flag,)) + payload
        header = orjson.dumps(meta)
        if len(header) > 0xFFFF:
            raise SerializationError("entry metadata is larger than 64 KiB (too many tags?)")
        return bytes((_META | flag,)) + len(header).to_bytes(2, "big") + header + payload

    def _payload(self, flags: int, payload: bytes) -> Any:
        if flags & _ZLIB:
            payload = zlib.decompress(payload)
        elif flags & _ZSTD:
            if self._zstd_d is None:
                raise CorruptEntry("entry is zstd-compressed but zstandard is not installed")
            payload = self._zstd_d.decompress(payload)
        return self._loads(payload)

    def loads(self, stored: Any) -> Any:
        if type(stored) is bytes and stored[:1] == b"\x01":  # the common case, inline
            try:
                return self._loads(stored[1:])
            except Exception as exc:
                raise CorruptEntry(f"{type(exc).__name__}: {exc}") from exc
        return self.loads_meta(stored)[0]

    def loads_meta(self, stored: Any) -> tuple[Any, dict[str, Any] | None]:
        if type(stored) is int:  # a counter made by the memory backend's incr
            return stored, None
        try:
            first = stored[0]
            if first == _PLAIN:  # the common case first
                return self._loads(stored[1:]), None
            if first in _DIGITS:
                return int(stored), None
            kind = first & _KIND_MASK
            if kind == _PLAIN:
                return self._payload(first, stored[1:]), None
            if kind == _META:
                size = int.from_bytes(stored[1:3], "big")
                meta = orjson.loads(stored[3 : 3 + size])
                return self._payload(first, stored[3 + size :]), meta
        except CorruptEntry:
            raise
        except Exception as exc:
            raise CorruptEntry(f"{type(exc).__name__}: {exc}") from exc
        raise CorruptEntry(f"unknown entry format (first byte {first:#04x})")
