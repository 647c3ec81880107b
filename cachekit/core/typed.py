"""Type-faithful hits: a hit of ``@cached`` returns what the miss returned.

A remote cache stores bytes, and JSON has no tuples, dataclasses, UUIDs or Enums, so what
comes back from the serializer is not always what went in. Decided once per decorated
function, at decoration (:class:`ResultRules`):

- The function's return annotation names a type JSON cannot say (``tuple[int, int]``, a
  dataclass, ``datetime``, ``dict[int, str]``, ``set[str]``, ``UUID``, an Enum, a pydantic
  model, ``Optional``/unions of those...): a hit is decoded into it by msgspec's
  ``convert`` (pydantic's ``TypeAdapter`` when the type holds a pydantic model). A cached
  value that does not fit the annotation (an entry from an older version of the function)
  is treated as a miss: the function runs and its result replaces the entry.
- No annotation, or one that says nothing a JSON value does not already say (``dict``,
  ``list[str]``, ``dict[str, Any]``, ``int``, ``Any``...), or one msgspec cannot decode
  into: a hit is returned as the serializer gives it, and a miss returns its value after
  the same round trip through the serializer, so both calls return the same thing.

On a cache that stores objects as they are (the memory backend without a serializer), or
pickles them, there is nothing to do: the rules are both None and the wrappers are
today's. The stampede wrapper cannot tell a hit from a computed value, so it decodes both
(a computed value of the annotated type comes through unchanged) and returns a value that
does not fit as it is.

Annotations are read without the wrapper's own per-call inspection: the decoder is built
here, once; the hit path calls it, or nothing.

Annotations are resolved with :func:`typing.get_type_hints`. A forward reference that does
not resolve yet (a method returning its own class, defined after the decorator ran) is
resolved again on the first call, once; if it still does not resolve, the function is
treated as unannotated and that is logged once.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import datetime
import decimal
import logging
import sys
import types
import typing
from collections.abc import Callable
from typing import Any

from ..exceptions import SerializationError

__all__ = ["ResultRules"]

logger = logging.getLogger(__name__)

Convert = Callable[[Any], Any]

_JSON_LEAVES: frozenset[Any] = frozenset({str, int, float, bool, type(None), object, Any})
_JSON_BARE: frozenset[Any] = frozenset(
    {dict, list, collections.abc.Mapping, collections.abc.Sequence, collections.abc.Iterable,
     collections.abc.Collection, collections.abc.MutableMapping, collections.abc.MutableSequence}
)  # fmt: skip
_UNIONS: frozenset[Any] = frozenset({typing.Union, types.UnionType})
_SCALARS = frozenset({str, int, float, bool, type(None)})  # a round trip gives them back as is
# types the orjson serializer gives back as themselves: a hit of that exact type is final
_ATOMIC: frozenset[Any] = frozenset(
    {datetime.datetime, datetime.date, datetime.time, datetime.timedelta, decimal.Decimal,
     bytes, bytearray, complex}
)  # fmt: skip


def _json_shaped(tp: Any) -> bool:
    """Whether any JSON value the serializer returns already is of type ``tp`` (or the type
    says nothing more precise): then a hit needs no conversion."""
    if tp in _JSON_LEAVES or tp in _JSON_BARE or isinstance(tp, typing.TypeVar):
        return True
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in _UNIONS:
        return all(_json_shaped(arg) for arg in args)
    if origin is typing.Literal:
        return all(type(arg) in (str, int, bool, type(None)) for arg in args)
    if origin in (dict, collections.abc.Mapping, collections.abc.MutableMapping):
        return len(args) == 2 and args[0] is str and _json_shaped(args[1])
    if origin in _JSON_BARE:  # list[X], Sequence[X], ...
        return all(_json_shaped(arg) for arg in args)
    supertype = getattr(tp, "__supertype__", None)  # typing.NewType
    return supertype is not None and _json_shaped(supertype)


def _holds_pydantic(tp: Any) -> bool:
    pydantic = sys.modules.get("pydantic")  # never imported by us: a model implies it
    if pydantic is None:
        return False
    if isinstance(tp, type) and issubclass(tp, pydantic.BaseModel):
        return True
    return any(_holds_pydantic(arg) for arg in typing.get_args(tp))


def _converter(tp: Any) -> Convert:
    """A function decoding a serializer's value into ``tp``; TypeError if none can."""
    if _holds_pydantic(tp):
        import pydantic

        validate: Convert = pydantic.TypeAdapter(tp).validate_python
        return validate
    import msgspec

    msgspec.json.Decoder(tp)  # raises TypeError now for types msgspec cannot decode into
    convert = msgspec.convert
    if tp in _ATOMIC:  # the serializer already gives these back (tagged): no call at all

        def decode_atomic(value: Any) -> Any:
            return value if type(value) is tp else convert(value, tp, strict=False)

        return decode_atomic

    def decode(value: Any) -> Any:
        return convert(value, tp, strict=False)

    return decode


def _caller_namespace() -> dict[str, Any] | None:
    """The locals of the code applying the decorator (the first frame outside cachekit):
    where a class defined in a function or class body, named by a string annotation, is."""
    frame = sys._getframe(1)
    while frame is not None and frame.f_globals.get("__name__", "").startswith("cachekit."):
        frame = frame.f_back  # type: ignore[assignment]
    return dict(frame.f_locals) if frame is not None else None


class _Unresolved(Exception):
    pass


def _return_type(func: Callable[..., Any], localns: dict[str, Any] | None) -> Any:
    """The resolved return annotation, None if there is none; _Unresolved if it names
    something not defined (yet)."""
    if "return" not in getattr(func, "__annotations__", {}):
        return None
    try:
        return typing.get_type_hints(func, localns=localns).get("return")
    except NameError as exc:
        raise _Unresolved(str(exc)) from exc
    except Exception as exc:  # a malformed annotation: treated as none
        raise _Unresolved(f"{type(exc).__name__}: {exc}") from exc


class ResultRules:
    """What a decorated function returns on a hit and on a miss (bytes-storing caches).

    ``hit(value)``: the cached value decoded into the return annotation (may raise: the
    value does not fit, treat it as a miss), or None when a hit is returned as it is.
    ``fresh(value)``: a stored miss's value as a hit will return it, or None.
    ``fresh_stored(value, entry)``: the same, given the entry the value was just encoded
    into (the store's own encoding is decoded: the value is not serialized twice); None
    when ``fresh`` is.
    ``unencodable(key, exc)``: a value that cannot be stored, counted, logged once per
    function and value type (the function's result is still returned).
    """

    def __init__(self, cache: Any, func: Callable[..., Any]) -> None:
        self._cache = cache
        self._name = f"{getattr(func, '__module__', '?')}.{getattr(func, '__qualname__', func)}"
        self._logged: set[str] = set()
        serializer = getattr(cache._codec, "serializer", None)
        self._serializer = serializer
        self.hit: Convert | None = None
        self.fresh: Convert | None = None
        self.fresh_stored: Callable[[Any, Any], Any] | None = None
        self.faithful: Callable[[Any], bool] | None = None
        if cache._codec.stores_objects or serializer is None:
            return  # objects are stored as they are: a hit is the object itself
        from ..serializers import PickleSerializer

        if isinstance(serializer, PickleSerializer):
            return  # pickle gives back the types it was given
        localns: dict[str, Any] | None = None
        try:
            tp = _return_type(func, None)
        except _Unresolved:
            localns = _caller_namespace()
            try:
                tp = _return_type(func, localns)
            except _Unresolved:  # defined later (a method returning its class): retry once
                self.hit, self.fresh = self._deferred(func, localns)  # and self.faithful
                deferred = self.fresh
                self.fresh_stored = lambda value, entry: deferred(value)
                return
        self.hit, self.fresh = self._rules(tp)
        if self.fresh is not None:
            self.fresh_stored = self._stored_round_trip(self.fresh)
        if self.hit is not None:
            self.faithful = self._faithful(self.hit)

    # -- choosing the rules ------------------------------------------------------------
    def _rules(self, tp: Any) -> tuple[Convert | None, Convert | None]:
        if tp is not None and not _json_shaped(tp):
            try:
                return _converter(tp), None
            except Exception as exc:
                logger.debug(
                    "%s: hits are not decoded into %r (%s); misses are round-tripped",
                    self._name, tp, exc,
                )  # fmt: skip
        return None, self._round_trip()

    def _round_trip(self) -> Convert | None:
        serializer = self._serializer
        dumps, loads = serializer.dumps, serializer.loads  # type: ignore[union-attr]
        scalars = _SCALARS

        def round_trip(value: Any) -> Any:
            if type(value) in scalars:
                return value
            try:
                return loads(dumps(value))
            except SerializationError:
                return value  # not storable: the store reports it, the caller gets it
            except Exception:  # a serializer that cannot read its own output: as is
                return value

        return round_trip

    def _stored_round_trip(self, round_trip: Convert) -> Callable[[Any, Any], Any]:
        """``round_trip`` for a value just encoded into ``entry``: the serializer's payload
        in the entry, decoded (what a hit of it returns: the same bytes, the same loads),
        when the codec hands it over; else the round trip itself (a compressed entry)."""
        codec = self._cache._codec
        payload_of = getattr(codec, "payload_of", None)
        if payload_of is None:
            return lambda value, entry: round_trip(value)
        loads = self._serializer.loads  # type: ignore[union-attr]
        scalars = _SCALARS
        if not codec.signed:  # a hit's own decoding, one call: what a hit returns, exactly

            def fresh_unsigned(value: Any, entry: Any) -> Any:
                if type(value) in scalars:
                    return value
                try:
                    return codec.loads(entry)
                except Exception:  # a serializer that cannot read its own output: as is
                    return value

            return fresh_unsigned
        # signed: the payload inside, decoded with no MAC check (the entry is our own)

        def fresh_stored(value: Any, entry: Any) -> Any:
            if type(value) in scalars:
                return value
            payload = payload_of(entry)
            if payload is None:
                return round_trip(value)
            try:
                return loads(payload)
            except Exception:  # a serializer that cannot read its own output: as is
                return value

        return fresh_stored

    def _deferred(
        self, func: Callable[..., Any], localns: dict[str, Any] | None
    ) -> tuple[Convert, Convert]:
        """Rules resolved at the first use. A race between two first calls resolves twice,
        to the same rules."""
        chosen: list[tuple[Convert | None, Convert | None]] = []

        def rules() -> tuple[Convert | None, Convert | None]:
            if not chosen:
                try:
                    tp = _return_type(func, localns)
                except _Unresolved as exc:
                    logger.warning(
                        "the return annotation of %s does not resolve (%s): its hits are "
                        "returned as the serializer stores them, and misses match them",
                        self._name, exc,
                    )  # fmt: skip
                    tp = None
                chosen.append(self._rules(tp))
            return chosen[0]

        def hit(value: Any) -> Any:
            convert = rules()[0]
            return value if convert is None else convert(value)

        def fresh(value: Any) -> Any:
            convert = rules()[1]
            return value if convert is None else convert(value)

        checks: list[Callable[[Any], bool] | None] = []

        def faithful(value: Any) -> bool:
            if not checks:
                convert = rules()[0]
                checks.append(None if convert is None else self._faithful(convert))
            check = checks[0]
            return check is None or check(value)

        self.faithful = faithful
        return hit, fresh

    def _faithful(self, hit: Convert) -> Callable[[Any], bool]:
        """``faithful(value)``: whether a hit of this miss's ``value`` will be ``value``
        (checked before it is stored; a value decoded into the annotation can differ: the
        annotation does not fit it, an ``Any`` inside a container, a ``__post_init__`` or a
        validator that is not idempotent). One that would come back different is not
        stored (logged once): the function runs again, never returns another value."""
        serializer = self._serializer
        dumps, loads = serializer.dumps, serializer.loads  # type: ignore[union-attr]

        def faithful(value: Any) -> bool:
            try:
                back = hit(loads(dumps(value)))
                if _same(value, back):
                    return True
                why = f"a hit would return {type(back).__qualname__} {back!r:.80}"
            except SerializationError:
                return True  # not storable: the store reports it
            except Exception as exc:  # does not fit its own annotation, too deep, ...
                why = f"a hit would not decode ({type(exc).__name__}: {exc})"
            self.counters_unfaithful(why, value)
            return False

        return faithful

    def counters_unfaithful(self, why: str, value: Any) -> None:
        self._cache.counters.unencodable += 1
        if "unfaithful" not in self._logged:
            self._logged.add("unfaithful")
            logger.warning(
                "not caching a result of %s: it returned %s %.80r, %s (its return "
                "annotation decides what a hit is; logged once per function)",
                self._name, type(value).__qualname__, value, why,
            )  # fmt: skip

    # -- reporting ---------------------------------------------------------------------
    def unencodable(self, key: str, exc: SerializationError) -> bool:
        cache = self._cache
        if cache._raise_errors:
            raise exc
        cache.counters.unencodable += 1
        message = str(exc)
        if message not in self._logged and len(self._logged) < 16:
            self._logged.add(message)
            logger.warning(
                "not caching the results of %s: %s (logged once per function and type)",
                self._name, message,
            )  # fmt: skip
        return False

    def mismatch(self, key: str, exc: Exception) -> None:
        """A cached value that does not fit the return annotation: counted, logged once."""
        cache = self._cache
        cache.counters.corrupt += 1
        if "mismatch" not in self._logged:
            self._logged.add("mismatch")
            logger.warning(
                "a cached value of %s does not fit its return annotation (%s: %s): "
                "recomputing and replacing it (logged once per function)",
                self._name, type(exc).__name__, exc,
            )  # fmt: skip


def _same(value: Any, back: Any) -> bool:
    """Whether ``back`` (a decoded hit) is ``value``: equal, of the same types all the way
    down (a tuple is not a list), NaN equal to NaN. An int where the annotation says float
    may come back as the equal float (PEP 484's numeric tower)."""
    kind = type(value)
    if kind is not type(back):
        return kind is int and type(back) is float and value == back
    if kind is float:
        return bool(value == back or (value != value and back != back))
    if kind is list or kind is tuple:
        return len(value) == len(back) and all(map(_same, value, back))
    if kind is dict:
        if len(value) != len(back):
            return False
        for key, item in value.items():
            if key not in back or not _same(item, back[key]):
                return False
        return all(map(_same, sorted(value, key=repr), sorted(back, key=repr)))
    if dataclasses.is_dataclass(value):
        return all(
            _same(getattr(value, field.name), getattr(back, field.name))
            for field in dataclasses.fields(value)
        )
    fields = getattr(kind, "model_fields", None)  # pydantic v2
    if isinstance(fields, dict):
        return all(_same(getattr(value, name), getattr(back, name)) for name in fields)
    try:
        return bool(value == back)
    except Exception:
        return False
