"""The default serializer's extension types: what JSON cannot say, tagged.

Plain JSON values (dicts with str keys, lists, str, finite numbers, bools, None) are
stored as orjson writes them, byte for byte what cachekit always wrote, and read back with
one ``orjson.loads``. A value JSON cannot hold faithfully is written as a tagged object
``{"!ck": [kind, payload]}`` and the whole payload then starts with :data:`MARK`, a byte
no JSON text starts with: only marked payloads are walked on load, so a plain hit never
pays for the extension types.

Tagged (come back as they went in): bytes, bytearray, set, frozenset, datetime, date,
time, timedelta, Decimal, complex, non-finite floats (orjson would write ``null``), ints
beyond 64 bits, and dicts whose keys are not all str (``{5: "a"}``, tuple or date keys),
or that use the tag key themselves. Written as their JSON form, as orjson does (the
function's return annotation, or the miss round trip of ``@cached``, makes the hit match
the miss): tuples and lists (as lists), dataclasses (as dicts of all their fields, ``_x``
ones included, unlike orjson's own) and pydantic models (as dicts), UUIDs
(as str), Enums (as their value), numpy arrays (as lists).

How a payload is written (misses only): one ``orjson.dumps`` with a ``default=`` hook for
the types orjson refuses (and datetimes, passed through to it). That pass is used as is
unless it cannot be: orjson raised (a non-str key, a big int), or its output contains
``null`` and the value may hold a non-finite float, or a dict used the tag key. Then the
value is converted in Python into a tree of plain JSON and tags (:class:`_Tree`) and that
is written: exact for every case, at Python speed, and only for such values.
"""

from __future__ import annotations

import binascii
import dataclasses
import math
from collections.abc import Callable
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from enum import Enum
from functools import partial
from typing import Any
from uuid import UUID

import orjson

from ..exceptions import SerializationError

__all__ = ["MARK", "dumps_tagged", "loads_tagged"]

MARK = b"~"
"""First byte of a payload holding tagged values (JSON text never starts with it)."""
TAG = "!ck"
_TAG_BYTES = b'"!ck":'  # how the tag key appears in orjson's output
# dataclasses pass through to the hook: orjson leaves out fields whose name starts with
# "_", so a hit rebuilt from its output got those fields' defaults, not the miss's values
_OPTIONS = (
    orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_PASSTHROUGH_DATACLASS
)
_LEAVES = frozenset({str, int, bool, type(None)})
_INT64 = (-(2**63), 2**64 - 1)  # what orjson writes as a number (it takes u64 too)
_b64encode, _b64decode = binascii.b2a_base64, binascii.a2b_base64  # base64's, minus a layer


# -- writing -------------------------------------------------------------------------------
def _tag_of(obj: Any) -> tuple[str, Any] | None:
    """``(kind, payload)`` for a value JSON cannot hold, or None if it is not one of ours.
    The payload may hold further values (a set's items): the caller encodes them."""
    if isinstance(obj, (bytes, memoryview)):
        return "b", _b64encode(obj, newline=False).decode()
    if isinstance(obj, bytearray):
        return "ba", _b64encode(obj, newline=False).decode()
    if isinstance(obj, frozenset):
        return "fs", list(obj)
    if isinstance(obj, set):
        return "s", list(obj)
    if isinstance(obj, datetime):  # before date: a datetime is a date
        return "dt", obj.isoformat()
    if isinstance(obj, date):
        return "d", obj.isoformat()
    if isinstance(obj, time):
        return "t", obj.isoformat()
    if isinstance(obj, timedelta):
        return "td", [obj.days, obj.seconds, obj.microseconds]
    if isinstance(obj, Decimal):
        return "dec", str(obj)
    if isinstance(obj, complex):
        return "c", [_tree_float(obj.real), _tree_float(obj.imag)]
    return None


_BY_TYPE: dict[type, Callable[[Any], tuple[str, Any]]] = {
    datetime: lambda obj: ("dt", obj.isoformat()),
    date: lambda obj: ("d", obj.isoformat()),
    bytes: lambda obj: ("b", _b64encode(obj, newline=False).decode()),
    set: lambda obj: ("s", list(obj)),
    Decimal: lambda obj: ("dec", str(obj)),
}


_FIELD_NAMES: dict[type, tuple[str, ...]] = {}


def _dataclass_fields(obj: Any) -> dict[str, Any]:
    """Every field of a dataclass instance, ``_private`` ones included."""
    kind = type(obj)
    names = _FIELD_NAMES.get(kind)
    if names is None:
        names = tuple(field.name for field in dataclasses.fields(obj))
        if len(_FIELD_NAMES) < 4096:  # classes made on the fly: keep the table bounded
            _FIELD_NAMES[kind] = names
    return {name: getattr(obj, name) for name in names}


def _plain_of(obj: Any) -> Any:
    """The JSON form of a value written as its JSON form (not tagged), or raise TypeError."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return _dataclass_fields(obj)
    dump = getattr(obj, "model_dump", None)  # pydantic v2 models
    if callable(dump) and hasattr(type(obj), "model_fields"):
        return dump()
    raise TypeError(f"Type is not JSON serializable: {type(obj).__qualname__}")


def _hook(emitted: list[None], obj: Any) -> Any:
    """orjson's ``default=``: tag what it cannot write, counting the tags emitted."""
    encode = _BY_TYPE.get(type(obj))  # the common exact types without the isinstance chain
    if encode is not None:
        emitted.append(None)
        return {TAG: encode(obj)}
    tag = _tag_of(obj)
    if tag is None:
        return _plain_of(obj)
    emitted.append(None)
    return {TAG: tag}


def _tree_float(value: float) -> Any:
    if math.isfinite(value):
        return value
    return {TAG: ["f", repr(value)]}  # 'nan', 'inf', '-inf'


class _Tree:
    """The exact path: a value as plain JSON objects and tags, built in Python."""

    def __init__(self) -> None:
        self.tagged = False

    def tag(self, kind: str, payload: Any) -> dict[str, Any]:
        self.tagged = True
        return {TAG: [kind, payload]}

    def __call__(self, obj: Any) -> Any:
        kind = type(obj)
        if kind in _LEAVES:
            if kind is int and not _INT64[0] <= obj <= _INT64[1]:
                return self.tag("i", str(obj))
            return obj
        if isinstance(obj, float):
            return obj if math.isfinite(obj) else self.tag("f", repr(float(obj)))
        if isinstance(obj, dict):
            if all(type(key) is str for key in obj) and TAG not in obj:
                return {key: self(value) for key, value in obj.items()}
            return self.tag("m", [[self(key), self(value)] for key, value in obj.items()])
        if isinstance(obj, (list, tuple)):
            return [self(item) for item in obj]
        if isinstance(obj, Enum):
            return self(obj.value)
        if isinstance(obj, (str, int)):  # str/int subclasses, as orjson writes them
            return str(obj) if isinstance(obj, str) else self(int(obj))
        if isinstance(obj, UUID):
            return str(obj)
        if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
            return {name: self(value) for name, value in _dataclass_fields(obj).items()}
        tolist = getattr(obj, "tolist", None)
        if callable(tolist) and type(obj).__module__ == "numpy":
            return self(tolist())
        tag = _tag_of(obj)
        if tag is not None:
            return self.tag(tag[0], self(tag[1]))
        return self(_plain_of(obj))


_FLOAT_FREE = (datetime, date, time, UUID, Decimal, bytes)
_NO_FLOATS = _LEAVES | frozenset(_FLOAT_FREE)  # exact types: no stack push, no isinstance


def _may_hold_nonfinite(obj: Any) -> bool:
    """False only if ``obj`` surely holds no NaN/inf (orjson writes those as ``null``).
    Walks builtin containers (a loop, not a call per item: this runs on misses of values
    holding None); anything else answers "maybe" (the exact path decides)."""
    leaves = _NO_FLOATS
    stack = [obj]
    while stack:
        item = stack.pop()
        kind = type(item)
        if kind is dict:
            children: Any = item.values()
        elif kind is list or kind is tuple:
            children = item
        elif kind is float:
            if item - item != 0.0:  # NaN or ±inf (inf - inf is NaN)
                return True
            continue
        elif kind in leaves or isinstance(item, _FLOAT_FREE):
            continue
        else:
            return True
        for child in children:
            kind = type(child)
            if kind in leaves:
                continue
            if kind is float:
                if child - child != 0.0:
                    return True
                continue
            stack.append(child)
    return False


def dumps_tagged(obj: Any, name: str = "orjson") -> bytes:
    """The payload for ``obj``: plain JSON when it is plain JSON, else marked and tagged."""
    emitted: list[None] = []
    try:
        out = orjson.dumps(obj, default=partial(_hook, emitted), option=_OPTIONS)
    except TypeError:  # a non-str key, a big int, deep nesting, or a type we do not know
        return _dumps_exact(obj, name)
    if b"null" in out and _may_hold_nonfinite(obj):
        return _dumps_exact(obj, name)
    if not emitted:
        return out
    if out.count(_TAG_BYTES) != len(emitted):  # a dict of the user's own uses the tag key
        return _dumps_exact(obj, name)
    return MARK + out


def _dumps_exact(obj: Any, name: str) -> bytes:
    tree = _Tree()
    try:
        converted = tree(obj)
        out = orjson.dumps(converted, option=orjson.OPT_SERIALIZE_NUMPY)
    except (TypeError, ValueError, RecursionError) as exc:
        kind = type(obj)
        raise SerializationError(
            f"the {name} serializer cannot encode a value of type "
            f"{kind.__module__}.{kind.__qualname__}: {exc}"
        ) from exc
    return MARK + out if tree.tagged else out


# -- reading -------------------------------------------------------------------------------
def _hashable(obj: Any) -> Any:
    """A decoded set item or dict key: JSON arrays (tuples on the way in) become tuples."""
    if type(obj) is list:
        return tuple(_hashable(item) for item in obj)
    return obj


def _untag(obj: Any) -> Any:
    kind = type(obj)
    if kind is dict:
        if len(obj) == 1 and TAG in obj:
            return _decode_tag(obj[TAG])
        return {key: _untag(value) for key, value in obj.items()}
    if kind is list:
        return [_untag(item) for item in obj]
    return obj


def _decode_tag(tag: list[Any]) -> Any:
    kind, payload = tag
    if kind == "b":
        return _b64decode(payload)
    if kind == "ba":
        return bytearray(_b64decode(payload))
    if kind == "s":
        return {_hashable(_untag(item)) for item in payload}
    if kind == "fs":
        return frozenset(_hashable(_untag(item)) for item in payload)
    if kind == "m":
        return {_hashable(_untag(key)): _untag(value) for key, value in payload}
    if kind == "dt":
        return datetime.fromisoformat(payload)
    if kind == "d":
        return date.fromisoformat(payload)
    if kind == "t":
        return time.fromisoformat(payload)
    if kind == "td":
        return timedelta(*payload)
    if kind == "dec":
        return Decimal(payload)
    if kind == "f":
        return float(payload)
    if kind == "i":
        return int(payload)
    if kind == "c":
        return complex(_untag(payload[0]), _untag(payload[1]))
    raise ValueError(f"unknown tag {kind!r} in a cachekit payload")


def loads_tagged(data: bytes) -> Any:
    """A payload written by :func:`dumps_tagged` (or by older cachekit: plain JSON)."""
    if data[:1] == MARK:
        return _untag(orjson.loads(data[1:]))
    return orjson.loads(data)
