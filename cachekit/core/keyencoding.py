"""The injective text form of a call's arguments, for the keys ``@cached`` derives.

Two argument values get the same text only if they are the same value of the same type:
every kind is tagged, containers are structural, nothing is keyed by ``id()`` or by a
``repr`` that may hide state. The grammar (each token ends itself, so a sequence of tokens
reads back one way only)::

    int        42  -7            within orjson's 64-bit range, the digits orjson writes
               0x1b  -0x1b       beyond it (str() of a huge int has a digit limit)
    str        "a\\"b"           JSON, as orjson writes it; str("\\ud800") for lone surrogates
    float      1.0  1e+16  -0.0  orjson's shortest round-trip form (always a '.' or an 'e')
               nan  inf  -inf
    None/bool  null  true  false
    list       [v,v]     tuple (v,v)    dict {k:v,k:v} (sorted by k's text)
    set        set(v,v)  frozenset(v,v) (sorted by text)
    builtins   bytes(6869) bytearray(..) date(2020-01-01) datetime(..) time(..)
               timedelta(d,s,us) Decimal(1.50) UUID(..) complex(re,im) Fraction(n,d)
               range(a,b,c) type(mod.Name) fn(mod.name) timezone(..) zoneinfo("..")
    objects    mod.Name(...)     dataclasses, attrs and pydantic models (their fields), Enum
                                 members (their value), ``__cache_key__()`` results, plain
                                 subclasses of the builtins, numpy arrays, paths

Builtin tags have no dot; an object's tag is ``module.qualname``, which always has one.
The argument tuple itself is ``[v,v]``: for arguments that are all str, int, bool, None or
finite floats this is exactly ``orjson.dumps(args)``, the fast path of the hit path.

A value of any other type raises :class:`~cachekit.exceptions.InvalidKeyError`: give its
class a ``__cache_key__(self)`` returning what identifies it, or pass ``key=``.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import pathlib
import re
import types
import uuid
from collections import OrderedDict, defaultdict, deque
from collections.abc import Callable
from datetime import date, datetime, time, timedelta, timezone, tzinfo
from decimal import Decimal
from fractions import Fraction
from typing import Any

import orjson

from ..exceptions import InvalidKeyError

__all__ = ["DEFAULT_ARGUMENT", "FAST_TYPES", "encode", "encode_values", "unkeyable"]

_dumps = orjson.dumps
_INF = float("inf")
_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1  # what orjson writes as a JSON number
_HEAPTYPE = 1 << 9  # Py_TPFLAGS_HEAPTYPE: a class written in Python (its state is visible)
_PLAIN_NAME = re.compile(r"[\w.<>]+")

FAST_TYPES = frozenset({int, str, bool, type(None)})
"""Types whose text is exactly what orjson writes for them (so is a finite float's; the
hit path checks only these)."""

Encoder = Callable[[Any], str]


def _name(kind: type) -> str:
    """``module.qualname``, JSON-quoted if it holds characters the grammar uses."""
    name = f"{kind.__module__}.{kind.__qualname__}"
    # _str, not orjson alone: a __qualname__ set by hand may hold a lone surrogate
    return name if _PLAIN_NAME.fullmatch(name) else _str(name)


def _int(value: int) -> str:
    if _INT_MIN <= value <= _INT_MAX:
        return str(value)
    return hex(value)


def _str(value: str) -> str:
    try:
        return _dumps(value).decode()
    except TypeError:  # lone surrogates: orjson refuses them, ASCII JSON escapes them
        return f"str({json.dumps(value)})"


def _float(value: float) -> str:
    if -_INF < value < _INF:
        return _dumps(value).decode()
    return "nan" if value != value else ("inf" if value > 0 else "-inf")


def _join(values: Any) -> str:
    return ",".join([encode(v) for v in values])


def _items(value: tuple[Any, ...] | list[Any]) -> str:
    """The elements' texts, comma-separated: one orjson call when they are all simple."""
    for item in value:
        if type(item) not in FAST_TYPES:
            return _join(value)
    try:
        return _dumps(value).decode()[1:-1]
    except TypeError:
        return _join(value)


def _tuple(value: tuple[Any, ...]) -> str:
    return f"({_items(value)})"


def _list(value: list[Any]) -> str:
    return f"[{_items(value)}]"


def _dict(value: dict[Any, Any]) -> str:
    items = sorted((encode(k), encode(v)) for k, v in value.items())
    return "{" + ",".join([f"{k}:{v}" for k, v in items]) + "}"


def _set(value: set[Any] | frozenset[Any]) -> str:
    tag = "set" if isinstance(value, set) else "frozenset"
    return f"{tag}({','.join(sorted([encode(v) for v in value]))})"


def _tz(value: tzinfo | None) -> str:
    return "" if value is None else "," + encode(value)


def _fold(value: datetime | time) -> str:
    return ",fold" if value.fold else ""  # the second of two equal wall times (DST)


def _datetime(value: datetime) -> str:
    naive = value.replace(tzinfo=None, fold=0).isoformat()
    return f"datetime({naive}{_tz(value.tzinfo)}{_fold(value)})"


def _time(value: time) -> str:
    naive = value.replace(tzinfo=None, fold=0).isoformat()
    return f"time({naive}{_tz(value.tzinfo)}{_fold(value)})"


def _timedelta(value: timedelta) -> str:
    return f"timedelta({value.days},{value.seconds},{value.microseconds})"


def _timezone(value: timezone) -> str:
    return f"timezone({_timedelta(value.utcoffset(None))},{_str(value.tzname(None))})"


def _bytes(value: bytes) -> str:
    return f"bytes({value.hex()})"


def _bytearray(value: bytearray) -> str:
    return f"bytearray({value.hex()})"


def _memoryview(value: memoryview) -> str:
    return f"memoryview({_str(value.format)},{_tuple(value.shape or ())},{value.hex()})"


_ENCODERS: dict[type, Encoder] = {
    int: _int,
    str: _str,
    float: _float,
    bool: lambda value: "true" if value else "false",
    type(None): lambda value: "null",
    tuple: _tuple,
    list: _list,
    dict: _dict,
    set: _set,
    frozenset: _set,
    bytes: _bytes,
    bytearray: _bytearray,
    memoryview: _memoryview,
    date: lambda value: f"date({value.isoformat()})",
    datetime: _datetime,
    time: _time,
    timedelta: _timedelta,
    timezone: _timezone,
    Decimal: lambda value: f"Decimal({value})",  # str(Decimal) is exact, exponent included
    uuid.UUID: lambda value: f"UUID({value})",
    complex: lambda value: f"complex({_float(value.real)},{_float(value.imag)})",
    Fraction: lambda value: f"Fraction({_int(value.numerator)},{_int(value.denominator)})",
    range: lambda value: f"range({_int(value.start)},{_int(value.stop)},{_int(value.step)})",
    OrderedDict: lambda value: f"collections.OrderedDict({_tuple(tuple(value.items()))})",
    deque: lambda value: f"collections.deque({_list(list(value))},{encode(value.maxlen)})",
    defaultdict: lambda value: (
        f"collections.defaultdict({encode(value.default_factory)},{_dict(value)})"
    ),
}
"""Exact type -> encoder. Other types are resolved once (:func:`_resolve`) and added."""

# builtin bases a plain Python subclass is keyed through (most specific first)
_BASES: tuple[type, ...] = (
    int, float, complex, str, bytes, bytearray, tuple, OrderedDict, defaultdict, dict,
    deque, list, frozenset, set, datetime, date, time, timedelta, Decimal, uuid.UUID,
    Fraction,
)  # fmt: skip


def encode(value: Any) -> str:
    """The text of one value (raises :class:`InvalidKeyError` for unkeyable types)."""
    kind = type(value)
    encoder = _ENCODERS.get(kind)
    if encoder is None:
        encoder = _resolve(kind)
    return encoder(value)


def encode_values(values: tuple[Any, ...]) -> str:
    """The text of an argument tuple: ``[v,v,...]``; orjson's own output when it can be."""
    for value in values:
        kind = type(value)
        if kind not in FAST_TYPES and (kind is not float or not -_INF < value < _INF):
            break
    else:
        try:
            return _dumps(values).decode()
        except TypeError:  # an int beyond 64 bits, a str with lone surrogates
            pass
    try:
        return f"[{_join(values)}]"
    except RecursionError:
        raise InvalidKeyError("cannot key an argument nested this deeply (or cyclic)") from None


def unkeyable(kind: type, why: str) -> InvalidKeyError:
    return InvalidKeyError(
        f"cannot make a cache key from a {_name(kind)} ({why}): give the class a "
        f"__cache_key__(self) method returning what identifies the value, or pass key= "
        f"to @cached"
    )


def _refuse(why: str) -> Encoder:
    def refuse(value: Any) -> str:
        raise unkeyable(type(value), why)

    return refuse


def _tagged(kind: type, inner: Encoder) -> Encoder:
    tag = _name(kind)
    return lambda value: f"{tag}({inner(value)})"


def _resolve(kind: type) -> Encoder:
    """Decide, once per type, how its values are keyed (or that they cannot be)."""
    encoder = _choose(kind)
    if len(_ENCODERS) > 4096:  # classes made on the fly: keep the table bounded
        for extra in list(_ENCODERS)[len(_BUILTIN_ENCODERS) :]:
            del _ENCODERS[extra]
    _ENCODERS[kind] = encoder
    return encoder


def _fields(names: tuple[str, ...]) -> Encoder:
    return lambda value: ",".join([encode(getattr(value, name)) for name in names])


def _choose(kind: type) -> Encoder:
    if issubclass(kind, type):  # a class: by its qualified name (as pickle does)
        return lambda value: f"type({_name(value)})"
    custom = getattr(kind, "__cache_key__", None)
    if custom is not None:  # tagged with the type: two classes' keys never meet
        return _tagged(kind, lambda value: encode(value.__cache_key__()))
    if issubclass(kind, enum.Enum):  # values are unique per member within its class
        return _tagged(kind, lambda value: encode(value.value))
    if dataclasses.is_dataclass(kind):
        names = tuple(field.name for field in dataclasses.fields(kind))
        return _tagged(kind, _fields(names))
    attrs = getattr(kind, "__attrs_attrs__", None)
    if attrs is not None:
        return _tagged(kind, _fields(tuple(attribute.name for attribute in attrs)))
    pydantic = getattr(kind, "__pydantic_fields__", None)
    if isinstance(pydantic, dict):
        fields = _fields(tuple(pydantic))
        return _tagged(kind, lambda value: f"{fields(value)},{encode(value.__pydantic_extra__)}")
    if kind.__module__ == "numpy" or kind.__module__.startswith("numpy."):
        return _numpy(kind)
    if issubclass(kind, pathlib.PurePath):
        return _tagged(kind, lambda value: _str(str(value)))
    if issubclass(kind, tzinfo):
        return _tzinfo(kind)
    if kind in (types.FunctionType, types.BuiltinFunctionType):
        return _function
    for base in _BASES:
        if issubclass(kind, base):
            return _subclass(kind, base)
    if getattr(kind, "__repr__", object.__repr__) is not object.__repr__:
        return _refuse("its repr is not a key: it may leave out state or be ambiguous")
    return _refuse("it has no value identity, and id() is reused once it is collected")


def _subclass(kind: type, base: type) -> Encoder:
    """A subclass of a builtin, keyed as its builtin value tagged with its own type, when
    all its state is that value: Python classes only (a C extension may keep more, as a
    pandas Timestamp keeps nanoseconds), no ``__slots__`` of their own and an empty
    ``__dict__`` (a namedtuple qualifies)."""
    for cls in kind.__mro__[: kind.__mro__.index(base)]:
        if not cls.__flags__ & _HEAPTYPE:
            return _refuse(f"a {cls.__qualname__} may hold state beyond its {base.__name__}")
        if [slot for slot in cls.__dict__.get("__slots__", ()) if slot != "__weakref__"]:
            return _refuse(f"its __slots__ hold state beyond its {base.__name__}")
    inner = _ENCODERS[base]

    def subclass(value: Any) -> str:
        if getattr(value, "__dict__", None):
            raise unkeyable(kind, f"its attributes hold state beyond its {base.__name__}")
        return inner(value)

    return _tagged(kind, subclass)


def _numpy(kind: type) -> Encoder:
    def array(value: Any) -> str:
        dtype = value.dtype
        if dtype.hasobject:
            raise unkeyable(kind, "an array of Python objects")
        layout = _str(dtype.str) if dtype.names is None else encode(dtype.descr)
        shape = tuple(int(size) for size in value.shape)
        return f"{layout},{_tuple(shape)},{value.tobytes().hex()}"

    if not (hasattr(kind, "dtype") and hasattr(kind, "tobytes")):
        return _refuse("a numpy object that is not an array or a scalar")
    return _tagged(kind, array)


def _tzinfo(kind: type) -> Encoder:
    if getattr(kind, "__module__", "") == "zoneinfo":

        def zone(value: Any) -> str:
            if not isinstance(value.key, str):
                raise unkeyable(kind, "a zone loaded from a file has no name")
            return f"zoneinfo({_str(value.key)})"

        return zone
    if hasattr(kind, "zone"):  # pytz: the zone, and which of its offsets this instance is

        def pytz(value: Any) -> str:
            state = (value.zone, getattr(value, "_utcoffset", None), getattr(value, "_dst", None))
            return _tuple(state)

        return _tagged(kind, pytz)
    return _refuse("a time zone cachekit cannot name")


def _function(value: Any) -> str:
    owner = getattr(value, "__self__", None)
    name = getattr(value, "__qualname__", "")
    if (owner is not None and not isinstance(owner, types.ModuleType)) or "<" in name:
        raise unkeyable(type(value), "a lambda, a local function or a bound method")
    return f"fn({_name(value)})"


class _DefaultArgument:
    """Stands for "this parameter's default" when the default has no value identity."""

    __slots__ = ()


DEFAULT_ARGUMENT = _DefaultArgument()
_ENCODERS[_DefaultArgument] = lambda value: "default"
_BUILTIN_ENCODERS = dict(_ENCODERS)
