"""Write-behind on a real redis-server: outages, and a producer killed before flushing."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from typing import Any

import pytest
import redis
from conftest import unique_prefix

from cachekit import Cache
from cachekit.write.rules import encode_id
from cachekit.write.stream_queue import PUSH_SCRIPT
from cachekit.exceptions import BackendUnavailableError
from cachekit.testing.servers import RedisServer


def test_redis_killed_and_restarted_mid_run_loses_nothing(private_redis: RedisServer) -> None:
    cache = Cache(private_redis.url, prefix=unique_prefix(), retry_interval=0.05)
    rows: dict[Any, Any] = {}
    lock = threading.Lock()
    two_batches_stored = threading.Event()

    def store_many(batch: dict[Any, Any]) -> None:
        with lock:
            rows.update(batch)
            if len(rows) >= 40:
                two_batches_stored.set()

    items = cache.write_behind(
        "item:{}",
        store_many=store_many,
        batch_size=20,
        flush_interval=0.05,
        retry_backoff=0.02,
        retry_max_backoff=0.2,
    )
    for i in range(300):
        items.set(i, i)
    assert two_batches_stored.wait(10)
    private_redis.kill()  # the queue in Redis is gone (no persistence): the journal is not
    for i in range(300, 600):
        items.set(i, i)  # Redis away: held in this process until it answers
    private_redis.restart()
    for i in range(600, 900):
        items.set(i, -i)
    items.flush(timeout=60)
    expected = {i: i for i in range(600)} | {i: -i for i in range(600, 900)}
    assert rows == expected
    items.close()
    cache.close()


CHILD = r"""
import sys, time
from cachekit import Cache

url, prefix = sys.argv[1], sys.argv[2]
cache = Cache(url, prefix=prefix)

def store_many(batch):
    time.sleep(3600)  # hangs holding its first batch: the process is killed with it

items = cache.write_behind("item:{}", store_many=store_many, batch_size=100,
                           flush_interval=0.05)
for i in range(10_000):
    items.set(i, i * 2)
print("queued", flush=True)
time.sleep(3600)
"""


def test_a_killed_producer_is_finished_by_another_process(redis_server: RedisServer) -> None:
    prefix = unique_prefix()
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, redis_server.url, prefix],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "queued"
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
        if child.stdout is not None:
            child.stdout.close()

    client = redis.Redis.from_url(redis_server.url)
    stream = f"#{prefix}:1:wb:{{item:{{}}}}"
    # the dead producer may hold its first batch (pending, unacknowledged; how much of the
    # stream its worker had read when it was killed is a race); the rest is queued
    assert client.xpending(stream, "cachekit")["pending"] <= 100
    assert client.xlen(stream) == 10_000
    calls: list[int] = []

    def store_many(batch: dict[Any, Any]) -> None:
        calls.append(len(batch))
        client.hset(f"{prefix}:db", mapping={str(k): v for k, v in batch.items()})

    cache = Cache(redis_server.url, prefix=prefix)
    cache.set("unrelated", 1)
    assert cache.clear() >= 1  # entries go; the queued writes are not entries: they stay
    assert client.xlen(stream) == 10_000
    items = cache.write_behind(
        "item:{}", store_many=store_many, batch_size=100, flush_interval=0.05, claim_after=0.3
    )
    items.flush(shared=True, timeout=60)
    rows = {int(k): int(v) for k, v in client.hgetall(f"{prefix}:db").items()}
    assert rows == {i: i * 2 for i in range(10_000)}
    assert len(calls) <= math.ceil(10_000 / 100) + 3
    items.close()
    cache.clear()
    cache.close()
    client.close()


def test_a_poison_entry_is_dead_lettered_and_the_rest_of_its_batch_stored(
    redis_url: str,
) -> None:
    cache = Cache(redis_url, prefix=unique_prefix())
    db: dict[Any, Any] = {}
    items = cache.write_behind(
        "item:{}",
        store_many=db.update,
        batch_size=50,
        flush_interval=60,
        max_retries=2,
        retry_backoff=0.01,
    )
    client = redis.Redis.from_url(redis_url)
    stream = items._queue.stream
    # written by other code: an id that is no encoding of ours, a value that does not decode
    client.xadd(stream, {"i": b"\xff\x00 not an id", "v": cache._codec.dumps(1)})
    client.xadd(stream, {"i": b'"fine-id"', "v": b"\xff\xfe garbage"})
    for i in range(10):
        items.set(i, i * i)  # innocent writes in the same batch
    items.flush(shared=True, timeout=10)  # used to loop forever on the batch
    assert db == {i: i * i for i in range(10)}
    (letter,) = items.dead_letters()
    assert letter.attempts == 3 and "cannot decode" in letter.error
    raw = sorted((k.raw_id, k.raw_value) for k in letter.items)
    assert raw[0][0] == b'"fine-id"' and raw[1] == (b"\xff\x00 not an id", cache._codec.dumps(1))
    assert items.replay() == 2  # queued again byte for byte: still poison, dead again
    items.flush(shared=True, timeout=10)
    (again,) = items.dead_letters()
    assert sorted((k.raw_id, k.raw_value) for k in again.items) == raw
    assert client.xlen(stream) == 0
    items.close()
    cache.close()
    client.close()


def test_queued_writes_are_bound_to_their_queue_and_id(redis_url: str) -> None:
    # With a secret, a queued write used to be signed with the key "": anyone who could
    # write to Redis could move one to another queue, or give it another id, and it was
    # stored as if this process had queued it there.
    cache = Cache(redis_url, prefix=unique_prefix(), secret="s3cret")
    options: dict[str, Any] = dict(
        batch_size=1000, flush_interval=60, max_retries=1, retry_backoff=0.01
    )
    stored_a: dict[Any, Any] = {}
    stored_b: dict[Any, Any] = {}
    roles = cache.write_behind("role:{}", store_many=stored_a.update, name="roles", **options)
    notes = cache.write_behind("note:{}", store_many=stored_b.update, name="notes", **options)
    roles.set("alice", "admin")
    client = redis.Redis.from_url(redis_url)
    ((_, fields),) = client.xrange(roles._queue.stream)
    client.xadd(notes._queue.stream, fields)  # the same record in another queue
    client.xadd(roles._queue.stream, {"i": encode_id("mallory"), "v": fields[b"v"]})
    roles.flush(shared=True, timeout=10)
    notes.flush(shared=True, timeout=10)
    assert stored_a == {"alice": "admin"}  # never {"mallory": "admin"}
    assert stored_b == {}
    for queue in (roles, notes):
        (letter,) = queue.dead_letters()
        assert "signature does not verify" in letter.error
    roles.close()
    notes.close()
    cache.close()
    client.close()


EXITING_CHILD = r"""
import json, logging, sys
logging.basicConfig(level=logging.WARNING, format="LOG %(name)s: %(message)s")
from cachekit import Cache

url, prefix, journal, stored_path = sys.argv[1:5]
cache = Cache(url, prefix=prefix)

def store_many(batch):
    if url.startswith("memory"):
        raise RuntimeError("the database is down")
    with open(stored_path, "a") as out:  # what this process did store, to check no loss
        out.write(json.dumps(sorted(batch.items())) + "\n")

items = cache.write_behind("item:{}", store_many=store_many, batch_size=1000,
                           flush_interval=60, max_retries=None, exit_timeout=1.0,
                           journal_dir=journal)
for i in range(50):
    items.set(i, i)
print("first", flush=True)
sys.stdin.readline()  # meanwhile the parent freezes or kills Redis
for i in range(50, 100):
    items.set(i, -i)
print("second", flush=True)
"""  # and exits: the interpreter-exit flush must give up within exit_timeout


def _run_exiting_child(url: str, prefix: str, tmp: Any, outage: Any) -> tuple[float, list[str]]:
    child = subprocess.Popen(
        [sys.executable, "-c", EXITING_CHILD, url, prefix, str(tmp / "journal"), str(tmp / "s")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    assert child.stdin is not None and child.stdout is not None
    try:
        assert child.stdout.readline().strip() == "first"
        outage()
        child.stdin.write("go\n")
        child.stdin.flush()
        assert child.stdout.readline().strip() == "second"
        started = time.monotonic()
        _, stderr = child.communicate(timeout=30)  # it used to hang here forever
        elapsed = time.monotonic() - started
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == 0, stderr
    return elapsed, [line for line in stderr.splitlines() if line.startswith("LOG")]


def _stored_by_child(tmp: Any) -> dict[int, int]:
    rows: dict[int, int] = {}
    path = tmp / "s"
    if path.exists():
        for line in path.read_text().splitlines():
            rows.update({int(k): v for k, v in json.loads(line)})
    return rows


@pytest.mark.parametrize("outage", ["frozen", "killed"])
def test_exit_with_redis_unreachable_is_bounded_and_the_journal_is_replayed(
    private_redis: RedisServer, tmp_path: Any, outage: str
) -> None:
    prefix = unique_prefix()
    stop = private_redis.freeze if outage == "frozen" else private_redis.kill
    elapsed, lines = _run_exiting_child(private_redis.url, prefix, tmp_path, stop)
    assert elapsed < 1.0 + 3.0, lines  # exit_timeout, plus the grace and interpreter exit
    said = [line for line in lines if "journal" in line]
    assert len(said) == 1 and "100 writes not stored yet" in said[0], lines
    assert len(list((tmp_path / "journal").iterdir())) == 1
    if outage == "frozen":
        private_redis.thaw()  # the stream still holds the first 50
    else:
        private_redis.start()  # empty: the journal alone has them all

    rows = _stored_by_child(tmp_path)
    cache = Cache(private_redis.url, prefix=prefix)
    items = cache.write_behind(
        "item:{}",
        store_many=rows.update,
        flush_interval=0.05,
        claim_after=0.3,
        journal_dir=tmp_path / "journal",
    )
    items.flush(shared=True, timeout=30)  # starting the worker replays the journal
    assert rows == {i: i for i in range(50)} | {i: -i for i in range(50, 100)}
    assert list((tmp_path / "journal").iterdir()) == []  # forgotten once safe again
    items.close()
    cache.close()


def test_memory_exit_with_store_many_failing_is_bounded_and_replayed(tmp_path: Any) -> None:
    prefix = unique_prefix()
    elapsed, lines = _run_exiting_child("memory://", prefix, tmp_path, lambda: None)
    assert elapsed < 1.0 + 3.0, lines
    said = [line for line in lines if "journal" in line]
    assert len(said) == 1 and "100 writes not stored yet" in said[0], lines
    rows: dict[int, int] = {}
    cache = Cache("memory://", prefix=prefix)
    items = cache.write_behind("item:{}", store_many=rows.update, journal_dir=tmp_path / "journal")
    items.flush(timeout=10)
    assert rows == {i: i for i in range(50)} | {i: -i for i in range(50, 100)}
    assert list((tmp_path / "journal").iterdir()) == []
    items.close()


def test_flush_without_timeout_gives_up_on_a_frozen_redis(private_redis: RedisServer) -> None:
    cache = Cache(private_redis.url, prefix=unique_prefix(), timeout=0.2)
    rows: dict[Any, Any] = {}
    items = cache.write_behind(
        "item:{}", store_many=rows.update, flush_interval=60, exit_timeout=0.5
    )
    items.set(1, "one")
    private_redis.freeze()
    try:
        items.set(2, "two")  # held in this process's journal
        started = time.monotonic()
        with pytest.raises(BackendUnavailableError, match="has not answered"):
            items.flush()  # used to wait forever
        assert time.monotonic() - started < 3.0
        assert items.pending == 2
    finally:
        private_redis.thaw()
    items.flush(timeout=30)
    assert rows == {1: "one", 2: "two"}
    items.close()
    cache.close()


def test_entries_delivered_by_a_read_whose_reply_was_lost_are_not_stranded(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A frozen Redis that thaws runs the XREADGROUP the worker timed out on: the entries
    are delivered to this consumer, the reply is lost. They used to wait claim_after
    (a minute) for XAUTOCLAIM; the next pull reads the consumer's own pending list."""
    cache = Cache(redis_url, prefix=unique_prefix())
    items = cache.write_behind("item:{}", store_many=lambda batch: None, consume=False)
    queue = items._queue
    queue.maintain(time.monotonic(), False)  # the stream and its group
    queue.push(1, "one")
    client = cache._backend.clients.get()  # the connection the queue reads through
    real = client.xreadgroup

    def read_then_time_out(*args: Any, **kwargs: Any) -> Any:
        real(*args, **kwargs)  # Redis ran it...
        raise redis.exceptions.TimeoutError("Timeout reading from socket")  # ...reply lost

    monkeypatch.setattr(client, "xreadgroup", read_then_time_out)
    queue._next_claim = float("inf")  # no XAUTOCLAIM: claim_after has not passed
    with pytest.raises(redis.exceptions.TimeoutError):
        queue.pull(10)
    monkeypatch.undo()
    assert [(w.item_id, w.value) for w in queue.pull(10)] == [(1, "one")]
    assert queue.pull(10) == []  # seen once: the flag is down again
    cache.close()


def test_a_write_made_while_an_older_one_of_its_id_is_queued_again_is_stored_last(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Per-id order across an outage: set(1, "old") is held in the journal while Redis is
    away; when it answers the worker queues the backlog, and set(1, "new") made while it
    does used to be queued directly, ahead of it: the stream held new-then-old, the
    newest entry (old) was stored, the newer write lost (1 soak run in 7). A write of an
    id now waits behind an older held write of that id."""
    cache = Cache(redis_url, prefix=unique_prefix())
    rows: dict[Any, Any] = {}
    items = cache.write_behind("item:{}", store_many=rows.update, flush_interval=0.05)
    items.flush(timeout=10)  # the worker runs, the stream is made
    queue = items._queue
    real_eval, real_backlog = queue._eval, queue._backlog

    def push_refused(script: str, *args: Any) -> Any:
        if script is PUSH_SCRIPT:  # the outage: set() cannot queue, it holds the write
            raise redis.exceptions.ConnectionError("Error 111 connecting: refused")
        return real_eval(script, *args)

    old_written, newer_written = threading.Event(), threading.Event()

    def backlog_then_a_newer_write() -> Any:
        held = real_backlog()  # Redis answers again: the worker queues what was held
        if any(item_id == 1 for item_id, _ in held) and not newer_written.is_set():
            assert old_written.wait(10)  # set(1, "old") has returned (the cache has it)
            newer_written.set()
            items.set(1, "new")  # the id's next write, while the old one is on its way
        return held

    monkeypatch.setattr(queue, "_backlog", backlog_then_a_newer_write)
    monkeypatch.setattr(queue, "_eval", push_refused)
    items.set(1, "old")
    monkeypatch.setattr(queue, "_eval", real_eval)  # Redis is back
    old_written.set()
    items.flush(timeout=10)
    assert newer_written.is_set()
    assert rows == {1: "new"}
    assert items.get(1) == "new"
    items.close()
    cache.close()


@pytest.mark.parametrize("backend", ["redis", "memory"])
def test_a_retried_batch_never_stores_an_older_write_over_a_newer_one(
    backend: str, request: pytest.FixtureRequest
) -> None:
    """The first store of set(1, "old") fails and its batch waits for a retry; set(1, "new")
    is stored meanwhile. The retry used to store "old" after it: the newest-entry mark is
    forgotten once the newest write is acknowledged, so the older write looked current.
    A stored write now supersedes the older writes of its id that the worker holds."""
    url = request.getfixturevalue("redis_url") if backend == "redis" else "memory://"
    cache = Cache(url, prefix=unique_prefix())
    rows: dict[Any, Any] = {}
    refused = threading.Event()

    def store_many(batch: dict[Any, Any]) -> None:
        if not refused.is_set():
            refused.set()
            raise ConnectionError("the source is away")  # its first store fails
        rows.update(batch)

    items = cache.write_behind(
        "item:{}",
        store_many=store_many,
        flush_interval=0.05,
        retry_backoff=60.0,
        retry_max_backoff=60.0,
    )
    skew = [0.0]
    items._clock = lambda: time.monotonic() + skew[0]  # the retry is due when we say
    items.set(1, "old")
    assert refused.wait(10)  # refused: retried in 60 s
    items.set(1, "new")
    items.flush(timeout=10)  # the newer write is stored meanwhile
    assert rows == {1: "new"}
    skew[0] = 120.0  # the retry's time has come
    items.flush(timeout=10, shared=True)  # until the worker holds nothing more
    assert rows == {1: "new"}
    items.close()
    cache.close()


def test_a_batch_taken_over_from_a_dead_worker_never_stores_over_a_newer_write(
    redis_url: str,
) -> None:
    """Worker A took set(1, "old") and died holding it; set(1, "new") was stored by worker
    B. When B takes A's batch over, "old" must be superseded: the id's newest-entry mark
    used to be forgotten once "new" was acknowledged, and the taken-over write was stored
    over it. The mark now lasts until the id's last entry leaves the stream."""
    prefix = unique_prefix()
    dead_cache, cache = Cache(redis_url, prefix=prefix), Cache(redis_url, prefix=prefix)
    dead = dead_cache.write_behind("item:{}", store_many=lambda batch: None, consume=False)
    dead_queue = dead._queue
    dead_queue.maintain(time.monotonic(), False)  # the stream and its group
    dead_queue.push(1, "old")
    assert [w.value for w in dead_queue.pull(10)] == ["old"]  # pending with A, never acked
    rows: dict[Any, Any] = {}
    items = cache.write_behind("item:{}", store_many=rows.update, flush_interval=0.05)
    items.set(1, "new")
    items.flush(timeout=10)
    assert rows == {1: "new"}
    items._queue.claim_after = 0.0  # A's batch is taken over now
    items._queue._next_claim = 0.0
    items.flush(timeout=10, shared=True)  # until the stream is empty: "old" settled
    assert rows == {1: "new"}
    client = redis.Redis.from_url(redis_url)
    assert client.xlen(items._queue.stream) == 0
    assert client.hlen(items._queue.latest_key) == 0  # the mark went with its last entry
    client.close()
    items.close()
    cache.close()
    dead_cache.close()
