"""Property tests of the default-key encoding: distinct calls never share a key, equal
calls always do (issue 8, section 2)."""

from __future__ import annotations

import copy
import dataclasses
import enum
import math
import uuid
from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from cachekit.core.keys import KeyBuilder, Namespace


class Suit(enum.Enum):
    HEARTS = 1
    SPADES = "1"


class Flag(enum.IntEnum):
    ON = 1
    OFF = 0


@dataclasses.dataclass(frozen=True)
class Left:
    a: Any
    b: Any


@dataclasses.dataclass(frozen=True)
class Right:
    a: Any
    b: Any


def three(a: Any, b: Any = None, c: Any = 0) -> None: ...


KEYS = KeyBuilder(three)
FULL = KEYS.full(Namespace("prop"))

# small vocabularies, so that draws often come close to each other
floats = st.sampled_from([0.0, -0.0, 1.0, 1.5, math.nan, math.inf, -math.inf, 1e16, 2.0**64])
ints = st.one_of(st.integers(-3, 3), st.sampled_from([2**63, 2**64, -(2**63) - 1, 10**30]))
texts = st.text(alphabet='a1:%"\\[]()…#\x00é', max_size=4)
hashable_scalars = st.one_of(
    st.none(),
    st.booleans(),
    ints,
    floats,
    texts,
    st.binary(max_size=3),
    st.sampled_from([Decimal("1.5"), Decimal("1.50"), Decimal("-0"), Decimal("Infinity")]),
    st.sampled_from([uuid.UUID(int=0), uuid.UUID(int=1)]),
    st.sampled_from(list(Suit) + list(Flag)),
    st.sampled_from([date(2020, 1, 1), datetime(2020, 1, 1), time(1, 2)]),
    st.sampled_from(
        [
            datetime(2020, 1, 1, tzinfo=timezone.utc),
            datetime(2020, 1, 1, 1, tzinfo=timezone(timedelta(hours=1))),
            datetime(2020, 1, 1, fold=1),
            timedelta(0),
            timedelta(microseconds=1),
        ]
    ),
)


def _hashable(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(
        st.tuples(children, children),
        st.tuples(children),
        st.frozensets(children, max_size=3),
        st.builds(Left, children, children),
        st.builds(Right, children, children),
    )


hashables = st.recursive(hashable_scalars, _hashable, max_leaves=4)
values = st.recursive(
    hashables,
    lambda children: st.one_of(
        st.lists(children, max_size=3),
        st.tuples(children, children),
        st.dictionaries(hashables, children, max_size=3),
        st.sets(hashables, max_size=3),
        st.builds(Left, children, children),
        st.builds(Right, children, children),
    ),
    max_leaves=6,
)
calls = st.tuples(values, values, values)


def same(x: Any, y: Any) -> bool:
    """The oracle: the same value of the same type, all the way down (NaN is NaN, -0.0 is
    not 0.0, dicts and sets by content as == says)."""
    if type(x) is not type(y):
        return False
    if isinstance(x, float):
        if math.isnan(x) or math.isnan(y):
            return math.isnan(x) and math.isnan(y)
        return x == y and math.copysign(1, x) == math.copysign(1, y)
    if isinstance(x, (tuple, list)):
        return len(x) == len(y) and all(same(a, b) for a, b in zip(x, y))
    if isinstance(x, (set, frozenset)):
        return len(x) == len(y) and all(any(same(a, b) for b in y) for a in x)
    if isinstance(x, dict):
        return len(x) == len(y) and all(
            any(same(ka, kb) and same(va, y[kb]) for kb in y) for ka, va in x.items()
        )
    if dataclasses.is_dataclass(x):
        # field by field (dataclasses.astuple would turn nested dataclasses into tuples)
        return all(same(getattr(x, f.name), getattr(y, f.name)) for f in dataclasses.fields(x))
    if isinstance(x, Decimal):
        return str(x) == str(y)
    if isinstance(x, (datetime, time)):
        return (x.isoformat(), x.fold, x.tzinfo) == (y.isoformat(), y.fold, y.tzinfo)
    return bool(x == y)


@settings(max_examples=800, deadline=None)
@given(calls, calls)
def test_keys_equal_exactly_when_calls_are_the_same(x: tuple[Any, ...], y: tuple[Any, ...]) -> None:
    assert (KEYS(x, {}) == KEYS(y, {})) == same(x, y)


@settings(max_examples=300, deadline=None)
@given(calls)
def test_equal_calls_share_a_key(call: tuple[Any, ...]) -> None:
    a, b, c = call
    key = KEYS(call, {})
    assert KEYS(copy.deepcopy(call), {}) == key
    assert KEYS((a,), {"b": b, "c": c}) == KEYS((), {"c": c, "a": a, "b": b}) == key
    # the specialised builder (fast path for str/int/..., tagged path otherwise) agrees
    assert FULL(call, {}) == FULL((a,), {"c": c, "b": b}) == "prop:1:" + key


@given(st.tuples(st.one_of(ints, texts, st.booleans(), st.none(), floats), ints))
def test_defaults_are_part_of_the_call(call: tuple[Any, Any]) -> None:
    a, b = call
    assert KEYS((a, b), {}) == KEYS((a, b, 0), {}) == KEYS((a,), {"b": b})
    assert (KEYS((a,), {}) == KEYS((a, b), {})) == same(b, None)


def perm(user: str, resource: str) -> None: ...


PERM = KeyBuilder(perm, "perm:{user}:{resource}")
template_texts = st.text(alphabet="a:%3A", max_size=5)


@given(st.lists(template_texts, min_size=2, max_size=5), st.data())
def test_template_fields_never_run_together(parts: list[str], data: st.DataObject) -> None:
    # the same text split into (user, resource) at two places: unescaped, both render as
    # "perm:" + ":".join(parts)
    def split(at: int) -> tuple[str, str]:
        return ":".join(parts[:at]), ":".join(parts[at:])

    x = split(data.draw(st.integers(0, len(parts))))
    y = split(data.draw(st.integers(0, len(parts))))
    assert (PERM(x, {}) == PERM(y, {})) == (x == y)
