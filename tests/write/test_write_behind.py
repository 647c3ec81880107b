"""cache.write_behind on every backend: batching, coalescing, retries, dead letters."""

from __future__ import annotations

import asyncio
import math
import threading
import time
import uuid
from datetime import date
from typing import Any

import pytest
from conftest import unique_prefix

from cachekit import Cache, ConfigurationError
from cachekit.exceptions import InvalidKeyError


class Store:
    """A fake database whose store_many records every call and can be made to fail."""

    def __init__(self) -> None:
        self.rows: dict[Any, Any] = {}
        self.calls: list[dict[Any, Any]] = []
        self.fail_when: Any = None  # a predicate over the batch
        self.lock = threading.Lock()

    def store_many(self, items: dict[Any, Any]) -> None:
        with self.lock:
            self.calls.append(dict(items))
            if self.fail_when is not None and self.fail_when(items):
                raise RuntimeError(f"cannot store {sorted(items)[:3]}...")
            self.rows.update(items)


def test_ten_thousand_sets_end_in_full_batches(any_cache: Cache) -> None:
    db = Store()
    with any_cache.write_behind(
        "item:{}", store_many=db.store_many, batch_size=100, flush_interval=5.0
    ) as items:
        for i in range(10_000):
            items.set(i, {"n": i})
        items.flush(timeout=60)
        assert db.rows == {i: {"n": i} for i in range(10_000)}
        assert len(db.calls) <= math.ceil(10_000 / 100) + 3
        assert max(len(call) for call in db.calls) <= 100
        assert items.pending == 0


def test_set_updates_the_cache_at_once_and_get_reads_it(any_cache: Cache) -> None:
    db = Store()
    items = any_cache.write_behind(
        "item:{}", store_many=db.store_many, load=db.rows.get, flush_interval=60
    )
    items.set(1, "one")
    assert any_cache.get("item:1") == "one" and db.rows == {}
    any_cache.delete("item:1")
    assert items.get(1) == "one"  # queued, not stored yet: the queued value, not the source
    items.close()
    assert db.rows == {1: "one"}
    db.rows[2] = "two"
    assert items.get(2) == "two"


def test_repeated_writes_to_one_id_coalesce_last_wins(any_cache: Cache) -> None:
    db = Store()
    items = any_cache.write_behind("item:{}", store_many=db.store_many, flush_interval=60)
    for value in ("a", "b", "c"):
        items.set(1, value)
    items.set(2, "x")
    items.flush(timeout=10)
    assert db.calls == [{1: "c", 2: "x"}]
    items.close()


def test_a_failing_batch_is_retried_while_the_rest_keep_flowing(any_cache: Cache) -> None:
    db = Store()
    failed = threading.Event()

    def first_batch_fails_once(batch: dict[Any, Any]) -> bool:
        if 0 in batch and not failed.is_set():
            failed.set()
            return True
        return False

    db.fail_when = first_batch_fails_once
    items = any_cache.write_behind(
        "item:{}",
        store_many=db.store_many,
        batch_size=10,
        flush_interval=60,
        retry_backoff=0.3,
    )
    for i in range(100):
        items.set(i, i)
    items.flush(timeout=30)
    items.close()
    assert db.rows == {i: i for i in range(100)}
    with_zero = [n for n, call in enumerate(db.calls) if 0 in call]
    assert len(with_zero) == 2  # failed once, stored on the retry
    first, retry = with_zero
    assert db.calls[first] == db.calls[retry]
    # other batches were stored while the failed one waited for its retry
    assert any(0 not in call for call in db.calls[first + 1 : retry])
    assert len(db.calls) == 11


def test_after_max_retries_the_batch_is_dead_lettered_and_replayable(any_cache: Cache) -> None:
    db = Store()
    db.fail_when = lambda batch: 7 in batch
    items = any_cache.write_behind(
        "item:{}",
        store_many=db.store_many,
        batch_size=5,
        flush_interval=60,
        max_retries=2,
        retry_backoff=0.01,
    )
    for i in range(20):
        items.set(i, i * 10)
    items.flush(timeout=30)  # returns: the failing batch is out of the queue, not lost
    letters = items.dead_letters()
    assert len(letters) == 1
    (letter,) = letters
    assert letter.items == {7: 70}  # only the write store_many refuses: the rest are stored
    # its batch [5..9]: 1 try + 2 retries, then halves [5, 6] (stored) and [7, 8, 9],
    # which fails once more: halves [7] (dead) and [8, 9] (stored)
    assert letter.attempts == 5 and "cannot store" in letter.error
    assert sum(7 in call for call in db.calls) == 5
    assert set(db.rows) == set(range(20)) - {7}
    db.fail_when = None
    assert items.replay() == len(letter.items)
    items.flush(timeout=30)
    assert db.rows == {i: i * 10 for i in range(20)}
    assert items.dead_letters() == []
    items.close()


def test_mixing_sync_and_async_methods_on_one_queue_is_refused() -> None:
    cache = Cache()
    items = cache.write_behind("item:{}", store_many=lambda batch: None)
    items.set(1, 1)

    async def use_async() -> None:
        await items.aset(2, 2)

    with pytest.raises(ConfigurationError, match="thread worker"):
        asyncio.run(use_async())
    items.close()


def test_bad_options_are_refused() -> None:
    cache = Cache()
    with pytest.raises(ConfigurationError):
        cache.write_behind("item:{}", store_many=lambda b: None, batch_size=0)
    with pytest.raises(ConfigurationError):
        cache.write_behind(lambda i: i, store_many=lambda b: None)  # callable key needs name=


async def test_async_worker_with_async_store_many(any_cache: Cache) -> None:
    rows: dict[Any, Any] = {}
    calls = 0

    async def store_many(batch: dict[Any, Any]) -> None:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0)
        rows.update(batch)

    async with any_cache.write_behind(
        "item:{}", store_many=store_many, batch_size=50, flush_interval=5.0
    ) as items:
        for i in range(1_000):
            await items.aset(i, str(i))
        assert await any_cache.aget("item:999") == "999"
        await items.aflush(timeout=30)
        assert rows == {i: str(i) for i in range(1_000)}
        assert calls <= 1_000 // 50 + 3


async def test_async_worker_with_sync_store_many_and_dead_letters(any_cache: Cache) -> None:
    db = Store()
    db.fail_when = lambda batch: True
    items = any_cache.write_behind(
        "item:{}", store_many=db.store_many, max_retries=1, retry_backoff=0.01, flush_interval=60
    )
    await items.aset("a", 1)
    await items.aflush(timeout=10)
    assert [letter.items for letter in await items.adead_letters()] == [{"a": 1}]
    db.fail_when = None
    assert await items.areplay() == 1
    await items.aclose()
    assert db.rows == {"a": 1}


def test_clear_keeps_queued_writes_dead_letters_and_held_locks(any_cache: Cache) -> None:
    db = Store()
    db.fail_when = lambda batch: "bad" in batch
    items = any_cache.write_behind(
        "item:{}", store_many=db.store_many, max_retries=0, retry_backoff=0.01, flush_interval=60
    )
    items.set("bad", 1)
    items.flush(timeout=10)
    assert [letter.items for letter in items.dead_letters()] == [{"bad": 1}]
    any_cache.set("plain", 3, tags=["t"])
    with any_cache.lock("order:1", ttl=30):
        assert any_cache.clear() >= 2  # "plain" and the cached "bad"
        assert any_cache.lock("order:1").locked()  # clear() does not release a held lock
    assert any_cache.get("plain") is None and any_cache.get("item:bad") is None
    assert any_cache.delete_pattern("*") == 0
    assert [letter.items for letter in items.dead_letters()] == [{"bad": 1}]
    db.fail_when = None
    assert items.replay() == 1
    items.close()
    assert db.rows == {"bad": 1}
    any_cache.set("plain", 3)  # written again without the tag
    assert any_cache.invalidate_tags("t") == 0  # the tag set went with its entries
    assert any_cache.get("plain") == 3


def test_internal_keys_lie_outside_every_namespace() -> None:
    cache = Cache(prefix="shop")
    assert cache.namespace.internal("wb") == "#shop:1:wb:"
    assert not cache.namespace.internal("wb").startswith(cache.namespace.text)
    with pytest.raises(ConfigurationError, match="'#'"):
        Cache(prefix="#shop")  # its namespace "#shop:1:" would cover shop's internal keys


def test_ids_reach_store_many_as_given_and_coalesce(any_cache: Cache) -> None:
    """A tuple id used to come back from Redis as a list: unhashable, the worker looped on
    the batch forever and flush() never returned."""
    db = Store()
    user = uuid.UUID(int=7)
    items = any_cache.write_behind(
        lambda item_id: f"item:{item_id}", store_many=db.store_many, name="items", flush_interval=60
    )
    items.set(("eu", 1), "first")
    items.set(("eu", 1), "second")  # coalesces with the first
    items.set(user, "u")
    items.set(date(2020, 1, 1), "d")
    items.set("2020-01-01", "s")  # not the date
    items.flush(timeout=10)
    assert db.calls == [{("eu", 1): "second", user: "u", date(2020, 1, 1): "d", "2020-01-01": "s"}]
    assert [type(k) for k in db.calls[0]] == [tuple, uuid.UUID, date, str]
    items.close()


def test_an_id_that_cannot_travel_faithfully_is_refused_at_set(any_cache: Cache) -> None:
    items = any_cache.write_behind("item:{}", store_many=lambda batch: None)
    with pytest.raises(InvalidKeyError, match="write-behind item id"):
        items.set([1, 2], "x")  # a list id would come back... as what? refused, not queued
    assert items.pending == 0
    items.close()


@pytest.mark.parametrize("how", ["lupa missing", "fakeredis without scripting"])
def test_fakeredis_without_lua_is_refused_at_construction(
    how: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without Lua, tags were silently wrong and write-behind retried forever, a log line
    per write: refuse at construction, naming the extra that brings Lua."""
    import sys

    import fakeredis
    import fakeredis.commands_mixins

    if how == "lupa missing":
        monkeypatch.setitem(sys.modules, "lupa", None)  # `import lupa` raises ImportError
    else:

        class NoScripting:  # what fakeredis installs when lupa cannot be imported
            pass

        monkeypatch.setattr(fakeredis.commands_mixins, "ScriptingCommandsMixin", NoScripting)
    with pytest.raises(ImportError, match=r"cachekit\[fakeredis\]"):
        Cache("fakeredis://")
    with pytest.raises(ImportError, match=r"cachekit\[fakeredis\]"):
        Cache(client=fakeredis.FakeRedis())
    monkeypatch.undo()
    Cache("fakeredis://").close()  # with Lua: fine


def test_journal_files_are_taken_once_and_a_dead_takers_file_again(tmp_path: Any) -> None:
    import os
    import subprocess
    import sys

    from cachekit.write.journal import JournalFiles

    files = JournalFiles(tmp_path / "j", "memory|ns|item:{}")
    other = JournalFiles(tmp_path / "j", "memory|ns|other:{}")
    path = files.write([(1, "one", None, None)])
    other.write([(2, "two", None, None)])
    assert oct((tmp_path / "j").stat().st_mode & 0o777) == "0o700"
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    ((taken, content),) = files.take()
    assert content["records"] == [(1, "one", None, None)]
    assert files.take() == []  # taken: no second replay, in this process or another
    # a process that took a file and died before its writes were safe: taken again
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    os.rename(taken, str(taken).rsplit(".taken-", 1)[0] + f".taken-{dead.stdout.strip()}")
    ((again, content),) = files.take()
    assert content["records"] == [(1, "one", None, None)]
    files.forget(again)
    assert [p.name.startswith(other.digest) for p in (tmp_path / "j").iterdir()] == [True]
    # a file others could have written is refused, not unpickled
    unsafe = files.write([(3, "three", None, None)])
    unsafe.chmod(0o622)
    assert files.take() == []


async def test_aclose_is_bounded_and_keeps_what_it_could_not_store(tmp_path: Any) -> None:
    prefix = unique_prefix()
    failing = Cache("memory://", prefix=prefix)

    def refuse(batch: dict[Any, Any]) -> None:
        raise RuntimeError("the database is down")

    items = failing.write_behind(
        "item:{}", store_many=refuse, max_retries=None, exit_timeout=0.3, journal_dir=tmp_path
    )
    await items.aset(1, "one")
    await items.aset((2, "b"), "two")
    started = time.monotonic()
    await items.aclose()  # used to wait for ever
    assert time.monotonic() - started < 2.0
    assert len(list(tmp_path.iterdir())) == 1
    items._close_at_exit()  # at exit the writes are still pending: one file, not two
    assert len(list(tmp_path.iterdir())) == 1

    rows: dict[Any, Any] = {}
    again = Cache("memory://", prefix=prefix).write_behind(
        "item:{}", store_many=rows.update, journal_dir=tmp_path
    )
    await again.aflush(timeout=5)
    assert rows == {1: "one", (2, "b"): "two"}
    assert list(tmp_path.iterdir()) == []
    await again.aclose()
