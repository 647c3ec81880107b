"""Serializers turn values into bytes and back.

A serializer is anything with ``dumps(obj) -> bytes`` and ``loads(bytes) -> obj``
(:class:`Serializer`). Built in: ``orjson`` (the default), ``json``, ``msgpack`` (extra
``cachekit[msgpack]``), ``raw`` (bytes pass-through), ``text`` (str) and ``pickle``, which
is only available with a signing secret: every entry carries an HMAC-SHA256 and an entry
whose signature does not match is refused, never unpickled.
"""

from __future__ import annotations

import datetime
import decimal
import hashlib
import hmac
import json
import pickle
from collections.abc import Callable
from functools import partial
from typing import Any, Protocol, runtime_checkable

import orjson

from .core.json_tags import MARK as TAG_MARK
from .core.json_tags import dumps_tagged, loads_tagged
from .exceptions import ConfigurationError, SerializationError

__all__ = [
    "JsonSerializer",
    "MsgpackSerializer",
    "OrjsonSerializer",
    "PickleSerializer",
    "RawSerializer",
    "Serializer",
    "TextSerializer",
    "get_serializer",
]


@runtime_checkable
class Serializer(Protocol):
    def dumps(self, obj: Any) -> bytes: ...

    def loads(self, data: bytes) -> Any: ...


def _unencodable(obj: Any, serializer: str, exc: BaseException) -> SerializationError:
    kind = type(obj)
    return SerializationError(
        f"the {serializer} serializer cannot encode a value of type "
        f"{kind.__module__}.{kind.__qualname__}: {exc}"
    )


class OrjsonSerializer:
    """JSON through orjson, faithful for the types cached functions return.

    Plain JSON is written as orjson writes it. bytes, sets, frozensets, datetimes, dates,
    times, timedeltas, Decimals, NaN/inf, big ints and dicts with non-str keys are tagged
    and come back as they went in (see :mod:`cachekit.core.json_tags`: only payloads holding
    such values pay for them on load). Tuples, dataclasses, pydantic models, UUIDs and
    Enums are written as their JSON form (lists, dicts, str, values): ``@cached`` decodes a
    hit into the function's return annotation, so those come back too.
    """

    name = "orjson"

    def __init__(self) -> None:
        # bound once (a partial calls straight into it): one Python frame less per miss
        self.dumps: Callable[[Any], bytes] = partial(dumps_tagged, name=self.name)

    loads = staticmethod(loads_tagged)
    # a payload not starting with TAG_MARK is plain JSON, read by orjson itself: the codec
    # tests the first byte inline (a frame less per hit; see BytesCodec.loads)
    tag_mark = TAG_MARK
    untagged_loads = staticmethod(orjson.loads)


class JsonSerializer:
    """The standard library's json module (slower than orjson; no extra types)."""

    name = "json"

    def dumps(self, obj: Any) -> bytes:
        try:
            return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()
        except (TypeError, ValueError) as exc:
            raise _unencodable(obj, self.name, exc) from exc

    def loads(self, data: bytes) -> Any:
        return json.loads(data)


class MsgpackSerializer:
    """MessagePack (``pip install 'cachekit[msgpack]'``).

    bytes, NaN/inf, and int or other non-str keys are native. Sets, frozensets, datetimes,
    dates, times, timedeltas and Decimals are written as extension types (codes 1-7) and
    come back as they went in; tuples come back as lists (``@cached`` decodes them into the
    return annotation), as with JSON.
    """

    name = "msgpack"

    def __init__(self) -> None:
        try:
            import msgpack
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ImportError(
                "the msgpack serializer needs the msgpack extra: pip install 'cachekit[msgpack]'"
            ) from exc
        self._msgpack = msgpack
        self._packb = msgpack.packb
        self._ext = msgpack.ExtType

    def dumps(self, obj: Any) -> bytes:
        try:
            data: bytes = self._packb(obj, use_bin_type=True, default=self._default)
        except (TypeError, ValueError, OverflowError) as exc:
            raise _unencodable(obj, self.name, exc) from exc
        return data

    def _default(self, obj: Any) -> Any:
        """msgpack's ``default=``: the types it cannot write, as extension types."""
        ext = self._ext
        if isinstance(obj, (set, frozenset)):
            items = self._packb(list(obj), use_bin_type=True, default=self._default)
            return ext(_EXT_FROZENSET if isinstance(obj, frozenset) else _EXT_SET, items)
        if isinstance(obj, (datetime.datetime, datetime.date, datetime.time)):
            code = (
                _EXT_DATETIME
                if isinstance(obj, datetime.datetime)
                else _EXT_DATE
                if isinstance(obj, datetime.date)
                else _EXT_TIME
            )
            return ext(code, obj.isoformat().encode())
        if isinstance(obj, datetime.timedelta):
            return ext(_EXT_TIMEDELTA, self._packb([obj.days, obj.seconds, obj.microseconds]))
        if isinstance(obj, decimal.Decimal):
            return ext(_EXT_DECIMAL, str(obj).encode())
        raise TypeError(f"can not serialize {type(obj).__qualname__!r} object")

    def _ext_hook(self, code: int, data: bytes) -> Any:
        if code in (_EXT_SET, _EXT_FROZENSET):
            # items as tuples where they were arrays: set items must be hashable
            items = self._msgpack.unpackb(
                data, raw=False, strict_map_key=False, use_list=False, ext_hook=self._ext_hook
            )
            return frozenset(items) if code == _EXT_FROZENSET else set(items)
        if code == _EXT_DATETIME:
            return datetime.datetime.fromisoformat(data.decode())
        if code == _EXT_DATE:
            return datetime.date.fromisoformat(data.decode())
        if code == _EXT_TIME:
            return datetime.time.fromisoformat(data.decode())
        if code == _EXT_TIMEDELTA:
            return datetime.timedelta(*self._msgpack.unpackb(data))
        if code == _EXT_DECIMAL:
            return decimal.Decimal(data.decode())
        return self._ext(code, data)

    def loads(self, data: bytes) -> Any:
        return self._msgpack.unpackb(data, raw=False, strict_map_key=False, ext_hook=self._ext_hook)


_EXT_SET, _EXT_FROZENSET, _EXT_DATETIME, _EXT_DATE, _EXT_TIME, _EXT_TIMEDELTA, _EXT_DECIMAL = range(
    1, 8
)


class RawSerializer:
    """Bytes pass through unchanged (str is stored UTF-8 encoded); loads returns bytes."""

    name = "raw"

    def dumps(self, obj: Any) -> bytes:
        if isinstance(obj, bytes):
            return obj
        if isinstance(obj, (bytearray, memoryview)):
            return bytes(obj)
        if isinstance(obj, str):
            return obj.encode()
        raise SerializationError(
            f"the raw serializer stores bytes or str, not {type(obj).__qualname__}"
        )

    def loads(self, data: bytes) -> Any:
        return bytes(data)


class TextSerializer:
    """str values, stored UTF-8 encoded."""

    name = "text"

    def dumps(self, obj: Any) -> bytes:
        if isinstance(obj, str):
            return obj.encode()
        raise SerializationError(f"the text serializer stores str, not {type(obj).__qualname__}")

    def loads(self, data: bytes) -> Any:
        return bytes(data).decode()


class PickleSerializer:
    """pickle, signed: ``HMAC-SHA256(secret, payload) || payload`` when used on its own.

    Unpickling data an attacker controls runs their code, so data whose signature does
    not verify (tampered, written with another secret, or not written by cachekit) is
    refused with :class:`SerializationError` before ``pickle.loads`` ever sees it. In a
    :class:`~cachekit.Cache` the entry codec signs instead, over the entry's key, its
    metadata and the payload (:mod:`cachekit.core.codec`), so an entry moved to another key is
    refused too: it takes the secret (:attr:`signing_secret`) and the unsigned pickling
    (:meth:`without_signature`) from here.
    """

    name = "pickle"
    _mac_size = 32

    def __init__(self, secret: str | bytes, protocol: int = pickle.HIGHEST_PROTOCOL) -> None:
        if not secret:
            raise ConfigurationError(
                "the pickle serializer needs a signing secret: Cache(..., serializer='pickle', "
                "secret='...'); unsigned pickles from a shared cache would let anyone who "
                "can write to it run code in your process"
            )
        self._key = secret.encode() if isinstance(secret, str) else bytes(secret)
        self._protocol = protocol
        # HMAC-SHA256 (RFC 2104) with its two keyed hash states computed once and copied
        # per entry: a third of hmac.new's cost, which is per-entry overhead on every
        # get and set (same bytes as hmac.new(key, payload, sha256).digest())
        key = self._key if len(self._key) <= 64 else hashlib.sha256(self._key).digest()
        key = key.ljust(64, b"\0")
        self._inner = hashlib.sha256(bytes(b ^ 0x36 for b in key))
        self._outer = hashlib.sha256(bytes(b ^ 0x5C for b in key))

    def _sign(self, payload: bytes) -> bytes:
        inner = self._inner.copy()
        inner.update(payload)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()

    @property
    def signing_secret(self) -> bytes:
        """The secret, for a codec that signs whole entries (key and metadata included)."""
        return self._key

    def without_signature(self) -> Serializer:
        """This serializer's pickling without its payload MAC: only for a codec that signs
        and verifies the whole entry itself (:class:`cachekit.core.codec.BytesCodec`)."""
        return _UnsignedPickle(self._protocol)

    def dumps(self, obj: Any) -> bytes:
        payload = _pickle(obj, self._protocol)
        return self._sign(payload) + payload

    def loads(self, data: bytes) -> Any:
        mac, payload = data[: self._mac_size], data[self._mac_size :]
        if len(mac) != self._mac_size or not hmac.compare_digest(mac, self._sign(payload)):
            raise SerializationError("pickle entry refused: its signature does not verify")
        return pickle.loads(payload)


def _pickle(obj: Any, protocol: int) -> bytes:
    try:
        return pickle.dumps(obj, protocol=protocol)
    except Exception as exc:  # pickling raises many types (PicklingError, TypeError, ...)
        raise _unencodable(obj, "pickle", exc) from exc


class _UnsignedPickle:
    """pickle with no signature of its own, behind a codec that verifies every entry's
    signature before this ``loads`` is reached. Never exposed as a serializer."""

    name = "pickle"

    def __init__(self, protocol: int) -> None:
        self._protocol = protocol

    def dumps(self, obj: Any) -> bytes:
        return _pickle(obj, self._protocol)

    def loads(self, data: bytes) -> Any:
        return pickle.loads(data)


def get_serializer(
    spec: str | Serializer | None, *, secret: str | bytes | None = None
) -> Serializer:
    """A serializer from its name (``"orjson"``, ``"json"``, ...) or an object with dumps/loads."""
    if spec is None or spec == "orjson":
        return OrjsonSerializer()
    if not isinstance(spec, str):
        if not (callable(getattr(spec, "dumps", None)) and callable(getattr(spec, "loads", None))):
            raise ConfigurationError(f"a serializer needs dumps() and loads(); got {spec!r}")
        return spec
    if spec == "pickle":
        return PickleSerializer(secret or b"")
    factories: dict[str, type[Any]] = {
        "json": JsonSerializer,
        "msgpack": MsgpackSerializer,
        "raw": RawSerializer,
        "bytes": RawSerializer,
        "text": TextSerializer,
        "str": TextSerializer,
    }
    try:
        factory = factories[spec]
    except KeyError:
        names = ", ".join(sorted([*factories, "orjson", "pickle"]))
        raise ConfigurationError(f"unknown serializer {spec!r}; choose one of {names}") from None
    serializer: Serializer = factory()
    return serializer
