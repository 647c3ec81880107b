"""The write strategies' decisions, with no backend and no event loop."""

from __future__ import annotations

import pytest

from cachekit._strategies import (
    QueuedWrite,
    after_failure,
    batch_due,
    coalesce,
    entry_order,
    item_key_builder,
    retry_delay,
    split_superseded,
    worker_wait,
)
from cachekit.exceptions import ConfigurationError


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
