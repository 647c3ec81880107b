"""The write strategies' decisions, with no backend and no event loop."""

from __future__ import annotations

import math
import uuid
from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cachekit.write.rules import (
    ItemIds,
    QueuedWrite,
    after_failure,
    batch_due,
    coalesce,
    decode_id,
    encode_id,
    entry_order,
    halves,
    item_key_builder,
    retry_delay,
    split_superseded,
    worker_wait,
)
from cachekit.exceptions import ConfigurationError, InvalidKeyError


def test_entry_order_compares_stream_ids_numerically() -> None:
    assert entry_order(b"1700000000000-10") > entry_order(b"1700000000000-9")
    assert entry_order("1700000000001-0") > entry_order(b"1700000000000-99")
    assert entry_order(3) > entry_order(2)


def test_coalesce_keeps_the_last_write_of_each_id_in_queue_order() -> None:
    writes = [QueuedWrite(3, "a", 3), QueuedWrite(1, "a", 1), QueuedWrite(2, "b", 2)]
    assert coalesce(writes) == {"a": 3, "b": 2}


def test_a_write_with_a_newer_one_queued_is_superseded() -> None:
    old, other = QueuedWrite(b"5-0", 1, "old"), QueuedWrite(b"6-0", 2, "x")
    current, superseded = split_superseded([old, other], {1: b"7-0", 2: b"6-0"})
    assert current == [other] and superseded == [old]
    # unknown to the queue (its marker was lost): stored, not dropped
    assert split_superseded([old], {}) == ([old], [])


def test_backoff_doubles_and_is_capped() -> None:
    assert [retry_delay(n, 0.1, 0.5) for n in (1, 2, 3, 4)] == [0.1, 0.2, 0.4, 0.5]


def test_a_batch_is_retried_max_retries_times_then_dead_lettered() -> None:
    assert after_failure(1, 2) == "retry"
    assert after_failure(2, 2) == "retry"
    assert after_failure(3, 2) == "dead"
    assert after_failure(0 + 1, 0) == "dead"
    assert after_failure(10_000, None) == "retry"
    # out of retries, a batch of several is split to isolate what the store refuses
    assert after_failure(3, 2, size=2) == "split"
    assert after_failure(3, 2, size=1) == "dead"
    assert after_failure(2, 2, size=50) == "retry"
    assert halves([1, 2, 3, 4, 5]) == ([1, 2], [3, 4, 5])


def test_a_batch_is_due_when_full_old_or_flushed() -> None:
    assert not batch_due(0, 10, None, 5.0, 1.0, True)
    assert batch_due(10, 10, 4.9, 5.0, 1.0, False)
    assert not batch_due(3, 10, 4.5, 5.0, 1.0, False)
    assert batch_due(3, 10, 4.0, 5.0, 1.0, False)
    assert batch_due(3, 10, 4.9, 5.0, 1.0, True)


def test_the_worker_sleeps_until_the_next_thing_to_do() -> None:
    assert worker_wait(10.0, None, 1.0, None, 2.0) == 2.0
    assert worker_wait(10.0, 9.5, 1.0, None, 2.0) == pytest.approx(0.5)
    assert worker_wait(10.0, None, 1.0, 10.25, 2.0) == pytest.approx(0.25)
    assert worker_wait(10.0, 8.0, 1.0, None, 2.0) == 0.0


def test_item_keys_from_templates_and_callables() -> None:
    assert item_key_builder("user:{}")(42) == "user:42"
    assert item_key_builder("user:{id}")("ab") == "user:ab"
    assert item_key_builder(lambda i: ("user", i))(7) == "user:7"
    with pytest.raises(ConfigurationError):
        item_key_builder("user:{}:{}")
    with pytest.raises(ConfigurationError):
        item_key_builder("user")


# -- write-behind item ids: faithful and canonical ------------------------------------------
_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),  # beyond 64 bits too
    st.floats(allow_nan=False),
    st.text(),
    st.binary(),
    st.uuids(),
    st.datetimes(timezones=st.sampled_from([None, timezone.utc, timezone(timedelta(hours=5))])),
    st.dates(),
    st.times(),
    st.decimals(allow_nan=False),
)
ids = st.recursive(
    _scalars,
    lambda inner: st.one_of(
        st.tuples(inner, inner), st.lists(inner, max_size=3).map(tuple), st.frozensets(inner)
    ),
    max_leaves=8,
)


def _same(a: Any, b: Any) -> bool:
    """Equal and of the same type, all the way down (1 == 1.0 == True are different ids)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, frozenset):
        return {encode_id(x) for x in a} == {encode_id(y) for y in b}
    if isinstance(a, Decimal):
        return str(a) == str(b)
    if isinstance(a, float) and math.isnan(a):
        return math.isnan(b)
    return bool(a == b) and (not isinstance(a, datetime) or a.tzinfo == b.tzinfo)


@given(ids)
def test_an_item_id_comes_back_as_the_same_value_of_the_same_type(item_id: Any) -> None:
    back = decode_id(encode_id(item_id))
    assert _same(back, item_id), (item_id, back)
    hash(back)  # a tuple id never comes back an unhashable list


@given(ids, ids)
def test_distinct_item_ids_encode_distinctly_and_equal_ones_equally(a: Any, b: Any) -> None:
    if _same(a, b):
        assert encode_id(a) == encode_id(b)  # equal ids coalesce
    else:
        assert encode_id(a) != encode_id(b)


def test_special_item_ids() -> None:
    for item_id in (float("nan"), float("inf"), -0.0, 2**200, (), frozenset(), (1, (2, "a"))):
        assert _same(decode_id(encode_id(item_id)), item_id)
    assert encode_id(frozenset({3, 1, 2})) == encode_id(frozenset({2, 3, 1}))
    assert decode_id(encode_id(uuid.UUID(int=5))) == uuid.UUID(int=5)
    assert decode_id(encode_id(date(2020, 1, 1))) != "2020-01-01"
    assert type(decode_id(encode_id(datetime(2020, 1, 1)))) is datetime
    assert type(decode_id(encode_id(time(1, 2)))) is time


@pytest.mark.parametrize("bad", [[1, 2], {"a": 1}, {1, 2}, object(), 1j])
def test_item_ids_that_cannot_travel_faithfully_are_refused(bad: Any) -> None:
    with pytest.raises(InvalidKeyError, match="write-behind item id"):
        encode_id(bad)


@pytest.mark.parametrize("data", [b"", b"\xff", b"[1,", b'{"zz": 1}', b'{"u": "nope"}'])
def test_bytes_that_are_not_an_encoded_id_raise_value_error(data: bytes) -> None:
    with pytest.raises(ValueError, match="not an encoded item id"):
        decode_id(data)


# -- ids equal across types (1, 1.0, True): one item of store_many's dict -----------------
_NUMBERS = st.one_of(
    st.integers(-2, 2),
    st.sampled_from([-1.0, -0.0, 0.0, 0.5, 1.0, 2.0]),
    st.booleans(),
    st.integers(-2, 2).map(Decimal),
)
_IDS = st.one_of(
    _NUMBERS,
    st.sampled_from(["1", "a", b"1"]),
    st.tuples(st.sampled_from(["a", "b"]), _NUMBERS),
    st.tuples(_NUMBERS, _NUMBERS),
)


@given(st.lists(_IDS, max_size=12))
def test_accepted_item_ids_that_are_equal_have_one_key(ids: list[Any]) -> None:
    """Whatever order ids come in, two that one object accepts and that compare equal (one
    key of a dict: one item for store_many) have the same cache key."""
    checked = ItemIds("queue")
    key_of = checked.keyed(item_key_builder("u:{}"))
    accepted: list[Any] = []
    for item_id in ids:
        try:
            key_of(item_id)
        except InvalidKeyError:
            continue
        accepted.append(item_id)
    for a in accepted:
        for b in accepted:
            if a == b:
                assert key_of(a) == key_of(b), (a, b)


def test_item_ids_keep_the_number_types_of_their_first_use() -> None:
    checked = ItemIds("queue 'q'")
    assert checked.check(1) == 1 and checked.check(2) == 2  # one type: fine
    for other in (1.0, True, Decimal(1), 2.5):  # a float 2.5 equals no int, but the rule
        with pytest.raises(InvalidKeyError, match="queue 'q': item id .* other types than 1"):
            checked.check(other)  # is by type: a queue of ints gets ints
    assert checked.check("1") == "1" and checked.check(b"1") == b"1"  # never equal to 1
    assert checked.check(("a", 1)) == ("a", 1) and checked.check((1, "a")) == (1, "a")
    with pytest.raises(InvalidKeyError):
        checked.check(("a", True))
    with pytest.raises(InvalidKeyError):
        checked.check((True, "a"))
    assert checked.check(frozenset({1, 2})) == frozenset({1, 2})
    with pytest.raises(InvalidKeyError):
        checked.check(frozenset({1.0, 2.0}))
    floats = ItemIds("floats")
    assert math.copysign(1, floats.check(-0.0)) == 1.0  # keyed as 0.0, the equal id
    assert floats.check(1.0) == 1.0
    with pytest.raises(InvalidKeyError, match="NaN"):
        floats.check(math.nan)
    with pytest.raises(InvalidKeyError, match="NaN"):
        floats.check(("a", Decimal("sNaN")))
