"""How values are laid out in a backend.

Remote backends store bytes::

    0x01 payload                      a value
    0x02 len(meta):u16 meta payload   a value with metadata (tags, logical expiry, ...)
    +0x10 / +0x20 on the first byte   payload zlib- / zstd-compressed
    b"-?[0-9]+"                       an integer, stored bare so Redis INCR works on it

With a ``secret`` every entry is signed and bound to its key::

    (0x41 | 0x42) [+0x10 / +0x20]  mac:32  rest      rest as above (meta header, payload)
    mac = HMAC-SHA256(K, len(key):u32 key first-byte rest)   K derived from the secret

so an entry copied under another key, its metadata (tags, logical expiry) changed, a
byte flipped, or an entry written without the secret (a bare ``b"1"`` included) is
refused. The MAC is checked before anything is decompressed or deserialized. A signature
proves that a process holding the secret wrote this value for this key; it does not
prove that it is the latest value (someone with write access to Redis could put back an
older entry of the same key).

Counters cannot be signed: Redis does their arithmetic (INCRBY) on bare digits. With a
secret, a bare integer read back raises :class:`UnsignedCounter`, and the cache returns
it only if the key carries a *counter mark*: an HMAC of the key alone (another derived
key), stored beside it by ``incr()`` and by ``set()``/``add()``/``set_many()`` of an int,
which are then stored bare too (so Django's ``set(k, 41); incr(k)`` works). Every other
store under the key (a signed entry: set/add/set_many of a non-int, ``@cached``, the
write strategies) and every delete drops the mark first, so the mark never outlives its
counter (an ``incr`` that finds no integer drops the mark it wrote). Anyone who can write
to Redis can change a counter's count, as they could with INCR, or put back a counter
and its mark from before (a replay, as above); they cannot make any other key read as an
integer. Integers that ``@cached`` functions return are signed entries like any value.

Decompression is capped (``max_decompressed_size``, 64 MiB by default): an entry that
would inflate past it is refused before the memory is spent, and a value that would make
such an entry is not stored.

Anything else (a foreign or corrupt entry) raises :class:`CorruptEntry`; callers treat it
as a miss, log and count it. The in-process memory backend stores objects as they are
(:class:`ObjectCodec`), as cachetools and lru_cache do, unless a serializer is asked for.
Every method takes the entry's full key (``key``): only a signing codec uses it.
"""

from __future__ import annotations

import hmac
import zlib
from collections.abc import Mapping
from typing import Any

import orjson

from ..exceptions import ConfigurationError, SerializationError
from ..serializers import Serializer, get_serializer
from .signing import MAC_SIZE, Signer, derive_key

__all__ = [
    "DEFAULT_MAX_DECOMPRESSED_SIZE",
    "BytesCodec",
    "Codec",
    "codec_for",
    "CorruptEntry",
    "ObjectCodec",
    "UnsignedCounter",
    "entry_layout",
]

_PLAIN = 0x01
_META = 0x02
_ZLIB = 0x10
_ZSTD = 0x20
_SIGNED = 0x40
_KIND_MASK = 0x0F
_PLAIN_BYTE = bytes((_PLAIN,))
_DIGITS = frozenset(b"-0123456789")
DEFAULT_MAX_DECOMPRESSED_SIZE = 64 * 1024 * 1024
_INFLATE_STEP = 1 << 20


def entry_layout(stored: Any) -> tuple[str, tuple[str, ...]]:
    """How a stored entry is laid out, read from its first byte (diagnostics,
    ``Cache.inspect``): its kind (``"value"``, ``"value with metadata"``, ``"integer"`` for
    a bare counter, ``"object"`` for what an in-process store keeps as it is, ``"empty"``,
    ``"unknown"``) and its flags (``"zlib"``, ``"zstd"``, ``"signed"``)."""
    if type(stored) is int:
        return "integer", ()
    if not isinstance(stored, bytes | bytearray | memoryview):
        return "object", ()
    raw = bytes(stored[:1])
    if not raw:
        return "empty", ()
    first = raw[0]
    if first in _DIGITS:
        return "integer", ()
    kind = {_PLAIN: "value", _META: "value with metadata"}.get(first & _KIND_MASK, "unknown")
    flags = tuple(name for bit, name in ((_ZLIB, "zlib"), (_ZSTD, "zstd"), (_SIGNED, "signed"))
                  if first & bit)  # fmt: skip
    return kind, flags


class CorruptEntry(Exception):
    """An entry cachekit cannot decode (foreign, truncated, tampered, other serializer)."""


class UnsignedCounter(CorruptEntry):
    """A bare integer read by a signing codec: a counter only if its key has a mark."""

    def __init__(self, value: int) -> None:
        super().__init__(
            f"an unsigned integer ({value}) refused: with a secret, a bare integer is read "
            f"only under a key that incr() or set() marked as a counter"
        )
        self.value = value


class Codec:
    """Interface: ``dumps(value, meta, key) -> stored`` and ``loads(stored, key) -> value``
    (``key``: the entry's full backend key, which a signed entry is bound to)."""

    stores_objects = False
    signed = False

    def dumps(self, value: Any, meta: dict[str, Any] | None = None, key: str = "") -> Any:
        raise NotImplementedError

    def loads(self, stored: Any, key: str = "") -> Any:
        raise NotImplementedError

    def loads_meta(self, stored: Any, key: str = "") -> tuple[Any, dict[str, Any] | None]:
        raise NotImplementedError

    # counters, for a signing codec (see the module docstring)
    @staticmethod
    def counter(value: int) -> Any:
        return value

    def counter_mark(self, key: str) -> bytes:
        return b""

    def is_counter_mark(self, key: str, mark: Any) -> bool:
        return False


class Boxed:
    """An object stored in memory together with its metadata."""

    __slots__ = ("meta", "value")

    def __init__(self, value: Any, meta: dict[str, Any]) -> None:
        self.value = value
        self.meta = meta


class ObjectCodec(Codec):
    """Memory backend default: values are stored as the objects themselves (no copy)."""

    stores_objects = True

    def dumps(self, value: Any, meta: dict[str, Any] | None = None, key: str = "") -> Any:
        return value if meta is None else Boxed(value, meta)

    def loads(self, stored: Any, key: str = "") -> Any:
        return stored.value if type(stored) is Boxed else stored

    def loads_meta(self, stored: Any, key: str = "") -> tuple[Any, dict[str, Any] | None]:
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
    """Serializer payload in a one-byte envelope, optionally compressed above a threshold,
    signed and bound to its key when there is a ``secret`` (a pickle serializer brings
    its own) unless ``sign=False`` (the in-process memory backend: no one else writes)."""

    def __init__(
        self,
        serializer: Serializer,
        *,
        secret: str | bytes | None = None,
        sign: bool = True,
        compress: str | None = None,
        compress_threshold: int = 1024,
        compress_level: int | None = None,
        max_decompressed_size: int = DEFAULT_MAX_DECOMPRESSED_SIZE,
    ) -> None:
        self.serializer = serializer
        self._dumps = serializer.dumps
        self._loads = serializer.loads
        self._threshold = compress_threshold
        if isinstance(max_decompressed_size, bool) or not isinstance(max_decompressed_size, int):
            raise ConfigurationError(
                f"max_decompressed_size must be a number of bytes, not {max_decompressed_size!r}"
            )
        if max_decompressed_size < 1:
            raise ConfigurationError("max_decompressed_size must be at least 1 byte")
        self._max_size = max_decompressed_size
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
        self._zstd_size = zstd.frame_content_size if zstd else None
        # A pickle serializer signs its payloads itself; it can also hand over its secret
        # and an unsigned twin, so that the entry (key, metadata, payload) is signed once.
        secret = (secret or getattr(serializer, "signing_secret", None)) if sign else None
        self.signed = bool(secret)
        if secret:
            raw = secret.encode() if isinstance(secret, str) else bytes(secret)
            self._signer = Signer(derive_key(raw, b"entry"))
            self._marker = Signer(derive_key(raw, b"counter"))
            twin = getattr(serializer, "without_signature", None)
            if callable(twin):
                plain = twin()
                self._dumps, self._loads = plain.dumps, plain.loads
            # chosen once: the unsigned methods below stay as they are
            self.dumps = self._signed_dumps  # type: ignore[method-assign]
            self.loads = self._signed_loads  # type: ignore[method-assign]
            self.loads_meta = self._signed_loads_meta  # type: ignore[method-assign]
        # a serializer may say which payloads a faster function reads as well (orjson's:
        # those without its tag mark, read by orjson.loads): tested inline on a hit
        self._mark: bytes = getattr(serializer, "tag_mark", b"")
        self._untagged = getattr(serializer, "untagged_loads", None) or self._loads

    # -- compression -----------------------------------------------------------------------
    def _compress(self, payload: bytes) -> tuple[int, bytes]:
        if not self._compress_flag or len(payload) < self._threshold:
            return 0, payload
        if len(payload) > self._max_size:  # it could never be read back
            raise SerializationError(
                f"a value of {len(payload)} bytes is over max_decompressed_size "
                f"({self._max_size} bytes)"
            )
        if self._compress_flag == _ZLIB:
            return _ZLIB, zlib.compress(payload, self._zlib_level)
        assert self._zstd_c is not None
        return _ZSTD, self._zstd_c.compress(payload)

    def _decompress(self, flags: int, payload: bytes) -> bytes:
        """The payload inflated, never past ``max_decompressed_size`` (a zip bomb is
        refused after at most that much output, not after all of it)."""
        cap = self._max_size
        if flags & _ZLIB:
            # in 1 MiB steps: a bomb costs at most the cap before it is refused (one call
            # with max_length=cap would grow its buffer by doubling, twice the cap)
            inflater = zlib.decompressobj()
            chunks: list[bytes] = []
            total, data = 0, payload
            while not inflater.eof:
                chunk = inflater.decompress(data, _INFLATE_STEP)
                if not chunk and len(inflater.unconsumed_tail) == len(data):
                    raise CorruptEntry("truncated zlib stream")  # no progress: input ran out
                data = inflater.unconsumed_tail
                total += len(chunk)
                if total > cap:
                    raise CorruptEntry(f"entry inflates past max_decompressed_size ({cap} bytes)")
                chunks.append(chunk)
            return b"".join(chunks)
        if flags & _ZSTD:
            if self._zstd_d is None or self._zstd_size is None:
                raise CorruptEntry("entry is zstd-compressed but zstandard is not installed")
            declared = self._zstd_size(payload)
            if declared > cap:
                raise CorruptEntry(f"entry inflates past max_decompressed_size ({cap} bytes)")
            # with no declared size (-1) the output is bounded by max_output_size
            out = self._zstd_d.decompress(payload, max_output_size=cap)
            assert isinstance(out, bytes)
            return out
        return payload

    def _payload(self, flags: int, payload: bytes) -> Any:
        return self._loads(self._decompress(flags, payload))

    # -- unsigned entries ------------------------------------------------------------------
    def dumps(self, value: Any, meta: dict[str, Any] | None = None, key: str = "") -> Any:
        if meta is None and type(value) is int:
            return str(value).encode()
        payload = self._dumps(value)
        if meta is None and not self._compress_flag:  # the common case, inline
            return _PLAIN_BYTE + payload
        flag, payload = self._compress(payload)
        if meta is None:
            return bytes((_PLAIN | flag,)) + payload
        return bytes((_META | flag,)) + _meta_header(meta) + payload

    def loads(self, stored: Any, key: str = "") -> Any:
        if type(stored) is bytes and stored[:1] == b"\x01":  # the common case, inline
            try:
                if stored[1:2] != self._mark:  # (b"": every non-empty payload)
                    return self._untagged(stored[1:])
                return self._loads(stored[1:])
            except Exception as exc:
                raise CorruptEntry(f"{type(exc).__name__}: {exc}") from exc
        return self.loads_meta(stored)[0]

    def loads_meta(self, stored: Any, key: str = "") -> tuple[Any, dict[str, Any] | None]:
        if type(stored) is int:  # a counter made by the memory backend's incr
            return stored, None
        try:
            first = stored[0]
            if first == _PLAIN:  # the common case first
                return self._loads(stored[1:]), None
            if first in _DIGITS:
                return int(stored), None
            if first & _SIGNED:
                raise CorruptEntry("a signed entry, and this cache has no secret to check it")
            return self._body(first, stored[1:])
        except CorruptEntry:
            raise
        except Exception as exc:
            raise CorruptEntry(f"{type(exc).__name__}: {exc}") from exc

    def _body(self, first: int, body: bytes) -> tuple[Any, dict[str, Any] | None]:
        """Decode what follows the first byte (and the MAC, for a signed entry)."""
        kind = first & _KIND_MASK
        if kind == _PLAIN:
            return self._payload(first, body), None
        if kind == _META:
            size = int.from_bytes(body[:2], "big")
            meta = orjson.loads(body[2 : 2 + size])
            return self._payload(first, body[2 + size :]), meta
        raise CorruptEntry(f"unknown entry format (first byte {first:#04x})")

    def payload_of(self, stored: Any) -> bytes | None:
        """The serializer's payload inside an entry this codec has just made, when it is
        there as is (not compressed; signed or not, with metadata or not); else None. For
        the miss path's round trip (see :mod:`cachekit.core.typed`): the entry is our own, so
        its MAC needs no check."""
        if type(stored) is not bytes or not stored:
            return None
        first = stored[0]
        body = stored[1 + MAC_SIZE :] if first & _SIGNED else stored[1:]
        kind = first & ~_SIGNED
        if kind == _PLAIN:
            return body
        if kind == _META:
            return body[2 + int.from_bytes(body[:2], "big") :]
        return None  # compressed (or a bare counter): the caller encodes again

    # -- signed entries --------------------------------------------------------------------
    def _mac(self, key: str, first: bytes, rest: bytes) -> bytes:
        return self._signer.sign(*self._framed(key, first, rest))

    def _signed_dumps(self, value: Any, meta: dict[str, Any] | None = None, key: str = "") -> Any:
        flag, payload = self._compress(self._dumps(value))
        if meta is None:
            first, rest = bytes((_PLAIN | flag | _SIGNED,)), payload
        else:
            first, rest = bytes((_META | flag | _SIGNED,)), _meta_header(meta) + payload
        return first + self._mac(key, first, rest) + rest

    def _signed_loads(self, stored: Any, key: str = "") -> Any:
        return self._signed_loads_meta(stored, key)[0]

    def _signed_loads_meta(self, stored: Any, key: str = "") -> tuple[Any, dict[str, Any] | None]:
        if type(stored) is int:  # the memory backend's incr
            raise UnsignedCounter(stored)
        if type(stored) is bytes and stored[:1] in _BARE_FIRST:
            try:
                number = int(stored)
            except ValueError:
                raise CorruptEntry(
                    "an unsigned entry refused (no signature): this cache signs its entries"
                ) from None
            raise UnsignedCounter(number)
        try:
            first = stored[0]
            if not first & _SIGNED:
                raise CorruptEntry(
                    "an unsigned entry refused (no signature): this cache signs its entries"
                )
            mac, rest = stored[1 : 1 + MAC_SIZE], stored[1 + MAC_SIZE :]
            # checked first: nothing of an entry that does not verify is inflated or read
            if not self._signer.verify(mac, *self._framed(key, stored[:1], rest)):
                raise CorruptEntry(
                    "signature does not verify (tampered, another key's entry, or "
                    "written with another secret)"
                )
            return self._body(first, rest)
        except CorruptEntry:
            raise
        except Exception as exc:
            raise CorruptEntry(f"{type(exc).__name__}: {exc}") from exc

    # -- counters (see the module docstring) --------------------------------------------
    @staticmethod
    def counter(value: int) -> bytes:
        """An int stored bare, for Redis INCRBY (its key gets a :meth:`counter_mark`)."""
        return str(value).encode()

    def counter_mark(self, key: str) -> bytes:
        name = key.encode("utf-8", "surrogatepass")
        return self._marker.sign(len(name).to_bytes(4, "big"), name)

    def is_counter_mark(self, key: str, mark: Any) -> bool:
        return type(mark) is bytes and hmac.compare_digest(mark, self.counter_mark(key))

    @staticmethod
    def _framed(key: str, first: bytes, rest: bytes) -> tuple[bytes, bytes, bytes, bytes]:
        name = key.encode("utf-8", "surrogatepass")
        return len(name).to_bytes(4, "big"), name, first, rest


_BARE_FIRST = frozenset(bytes((digit,)) for digit in _DIGITS)


def codec_for(options: Mapping[str, Any], local: bool) -> Codec:
    """The codec a cache's options ask for: on an in-process store with no serializer or
    compression asked for, the objects themselves; else bytes, signed unless in-process
    (nothing outside the process writes it, nothing to sign)."""
    serializer, compress = options["serializer"], options["compress"]
    if local and serializer is None and compress is None:
        return ObjectCodec()
    return BytesCodec(
        get_serializer(serializer, secret=options["secret"]),
        secret=options["secret"],
        sign=not local,
        compress=compress,
        compress_threshold=options["compress_threshold"],
        max_decompressed_size=options["max_decompressed_size"],
    )


def _meta_header(meta: dict[str, Any]) -> bytes:
    header = orjson.dumps(meta)
    if len(header) > 0xFFFF:
        raise SerializationError("entry metadata is larger than 64 KiB (too many tags?)")
    return len(header).to_bytes(2, "big") + header
