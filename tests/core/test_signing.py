"""Signed entries are bound to their key (issue 8, section 4), against a real redis-server.

With a ``secret`` every entry is HMAC-signed over (its full key, its first byte, its
metadata, its payload); the MAC is checked before anything is decompressed or unpickled;
nothing unsigned is returned (a bare integer only under a key marked as a counter);
decompression is capped.
"""

from __future__ import annotations

import asyncio
import logging
import pickle
import time
import tracemalloc
import zlib
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from hypothesis import given, settings
from hypothesis import strategies as st

from cachekit import Cache, IncrementError, SerializationError
from cachekit.core.codec import BytesCodec, CorruptEntry, UnsignedCounter
from cachekit.serializers import OrjsonSerializer, PickleSerializer
from cachekit.testing.servers import RedisServer
from conftest import unique_prefix

SECRET = "s3cret"
EXECUTED: list[str] = []


class Exploit:
    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (EXECUTED.append, ("pwned",))


@pytest.fixture(params=["pickle", "orjson"])
def signed(request: pytest.FixtureRequest, redis_server: RedisServer) -> Iterator[Cache]:
    cache = Cache(redis_server.url, prefix=unique_prefix(), serializer=request.param, secret=SECRET)
    yield cache
    cache.clear()
    cache.close()


@pytest.fixture
def raw(redis_server: RedisServer) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_server.url)
    yield client
    client.close()


def test_an_entry_copied_to_another_key_is_refused(
    signed: Cache, raw: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    signed.set("perm:alice", {"admin": True})
    raw.set(signed.make_key("perm:mallory"), raw.get(signed.make_key("perm:alice")) or b"")
    with caplog.at_level(logging.WARNING, logger="cachekit"):
        assert signed.get("perm:mallory", "miss") == "miss"
    assert signed.get("perm:alice") == {"admin": True}
    assert signed.counters.corrupt == 1
    assert any("signature does not verify" in record.getMessage() for record in caplog.records)


def test_a_bare_integer_over_a_signed_entry_is_refused(signed: Cache, raw: redis.Redis) -> None:
    signed.set("perm:alice", {"admin": False})
    raw.set(signed.make_key("perm:alice"), b"1")
    assert signed.get("perm:alice", "miss") == "miss"
    assert signed.get_many(["perm:alice"]) == {}
    assert signed.counters.corrupt == 2
    raw.set(signed.make_key("perm:alice"), b"\x01" + pickle.dumps(Exploit()))  # unsigned
    assert signed.get("perm:alice", "miss") == "miss"
    assert EXECUTED == []


def test_counters_work_under_a_secret_and_only_where_marked(
    signed: Cache, raw: redis.Redis
) -> None:
    assert signed.incr("hits") == 1 and signed.incr("hits", 4) == 5
    assert signed.get("hits") == 5 and signed.get_many(["hits"]) == {"hits": 5}
    signed.set("n", 41, ttl=100)  # Django's set-then-incr
    assert signed.incr("n") == 42 and signed.get("n") == 42
    signed.set_many({"a": 1, "b": "x"})
    assert signed.incr("a") == 2 and signed.get_many(["a", "b"]) == {"a": 2, "b": "x"}
    # a counter's mark is bound to its key: copied, it marks nothing
    mark = raw.get(signed._counter_mark_key(signed.make_key("hits")))
    assert mark
    raw.set(signed._counter_mark_key(signed.make_key("other")), mark)
    raw.set(signed.make_key("other"), b"7")
    assert signed.get("other", "miss") == "miss"


def _cached_store(signed: Cache, **options: Any) -> None:
    @signed.cached(key="n", **options)
    def load() -> dict[str, str]:
        return {"now": "a dict"}

    assert load.key() == "n"
    load()


_NOT_A_COUNTER: dict[str, Any] = {
    "set": lambda c: c.set("n", {"now": "a dict"}),
    "set-tagged": lambda c: c.set("n", 5, tags=("t",)),  # a tagged int is a signed entry
    "set-ttl-0": lambda c: c.set("n", "x", ttl=0),
    "add": lambda c: c.add("n", "x"),
    "set_many": lambda c: c.set_many({"n": "x", "m": 1}),
    "get_or_set": lambda c: c.get_or_set("n", lambda: "x"),
    "get_or_set-lock": lambda c: c.get_or_set("n", lambda: "x", lock=True),
    "cached": lambda c: _cached_store(c),
    "cached-lock": lambda c: _cached_store(c, lock=True),
    "cached-stale": lambda c: _cached_store(c, stale_ttl=30),
    "write_through": lambda c: c.write_through(
        key="{}", load=lambda i: "x", store=lambda i, v: None
    ).set("n", "x"),
    "delete": lambda c: c.delete("n"),
    "delete_many": lambda c: c.delete_many(["n"]),
    "expire-0": lambda c: c.expire("n", 0),
    "delete_pattern": lambda c: c.delete_pattern("n*"),
    "clear": lambda c: c.clear(),
    "aset": lambda c: asyncio.run(c.aset("n", [1])),
    "adelete": lambda c: asyncio.run(c.adelete("n")),
    "aget_or_set": lambda c: asyncio.run(c.aget_or_set("n", lambda: "x")),
}


_ONLY_IF_ABSENT = [
    store
    for name, store in _NOT_A_COUNTER.items()
    if name.startswith(("add", "cached", "get_or", "aget_or"))
]


@pytest.mark.parametrize("store", _NOT_A_COUNTER.values(), ids=_NOT_A_COUNTER.keys())
def test_a_counter_mark_does_not_outlive_the_counter(
    signed: Cache, raw: redis.Redis, store: Any
) -> None:
    """A key once a counter kept its mark when something else was stored over it (or it
    was deleted): anyone who can write to Redis could then put b"7" there and read 7.
    Every store of a non-counter, and every delete, drops the mark."""
    full, mark_key = signed.make_key("n"), signed._counter_mark_key(signed.make_key("n"))
    assert signed.incr("n", 5) == 5 and raw.get(mark_key)
    if store in _ONLY_IF_ABSENT:
        raw.delete(full)  # the counter expired; its mark (refreshed by each incr) did not
    store(signed)
    assert raw.get(mark_key) is None
    # clear() bumps the namespace generation: the keys of the entry and its mark moved
    full, mark_key = signed.make_key("n"), signed._counter_mark_key(signed.make_key("n"))
    assert raw.get(mark_key) is None
    raw.set(full, b"7")
    assert signed.get("n", "miss") == "miss" and signed.get_many(["n"]) == {}
    # and a counter made again works as before
    assert signed.incr("n") == 8 and signed.get("n") == 8


def test_an_incr_refused_by_what_the_key_holds_leaves_no_mark(
    signed: Cache, raw: redis.Redis
) -> None:
    signed.set("n", {"a": "dict"})
    with pytest.raises(IncrementError):
        signed.incr("n")  # INCRBY on a signed entry: not an integer
    mark_key = signed._counter_mark_key(signed.make_key("n"))
    assert raw.get(mark_key) is None
    raw.set(signed.make_key("n"), b"7")
    assert signed.get("n", "miss") == "miss"


def test_a_delete_replayed_after_an_outage_drops_the_counter_mark(
    private_redis: RedisServer,
) -> None:
    cache = Cache(
        private_redis.url, prefix=unique_prefix(), secret=SECRET, timeout=0.2, retry_interval=0.05
    )
    raw = redis.Redis.from_url(private_redis.url)
    try:
        assert cache.incr("n", 5) == 5
        private_redis.freeze()
        try:
            cache.delete("n")  # times out: the circuit opens, the delete is kept
            assert cache._breaker.pending == 1
        finally:
            private_redis.thaw()
        deadline = time.monotonic() + 5
        while cache.stats()["circuit"] != "closed" or cache._breaker.pending:  # Redis is back
            assert time.monotonic() < deadline, "the breaker did not close"
            time.sleep(0.01)
        assert raw.get(cache._counter_mark_key(cache.make_key("n"))) is None
        raw.set(cache.make_key("n"), b"7")
        assert cache.get("n", "miss") == "miss"
    finally:
        raw.close()
        cache.close()


def test_an_add_that_finds_a_counter_keeps_its_mark(signed: Cache) -> None:
    assert signed.incr("n", 3) == 3
    assert signed.add("n", "x") is False
    assert signed.get("n") == 3


def test_tampered_metadata_is_refused(signed: Cache, raw: redis.Redis) -> None:
    signed.set("tagged", "v", tags=("t",))
    stored = bytearray(raw.get(signed.make_key("tagged")) or b"")
    at = stored.index(b'"t"')
    stored[at + 1] = ord("u")  # another tag: the entry would escape invalidate_tags("t")
    raw.set(signed.make_key("tagged"), bytes(stored))
    assert signed.get("tagged", "miss") == "miss"


def test_http_bytes_are_signed_too(signed: Cache, raw: redis.Redis) -> None:
    pages = signed.with_options(serializer="raw")
    pages.set("page", b"<html>")
    assert pages.get("page") == b"<html>"
    raw.set(pages.make_key("other"), raw.get(pages.make_key("page")) or b"")
    assert pages.get("other", "miss") == "miss"
    raw.set(pages.make_key("plain"), b"\x01<html>forged")
    assert pages.get("plain", "miss") == "miss"


def _zlib_bomb(size: int) -> bytes:
    packer = zlib.compressobj(9)
    chunk = b"0" * (1 << 20)
    parts = [packer.compress(b"[") for _ in range(1)]
    parts += [packer.compress(chunk) for _ in range(size >> 20)]
    return b"".join(parts) + packer.flush()


def _peak_during(call: Any) -> int:
    tracemalloc.start()
    try:
        call()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_a_zip_bomb_is_a_miss_without_the_memory(redis_server: RedisServer) -> None:
    bomb = bytes((0x11,)) + _zlib_bomb(256 << 20)  # 256 MiB of JSON-ish text, ~250 KiB
    assert len(bomb) < 1 << 20
    plain = Cache(redis_server.url, prefix=unique_prefix(), compress="zlib")
    raw = redis.Redis.from_url(redis_server.url)
    raw.set(plain.make_key("bomb"), bomb)
    peak = _peak_during(lambda: plain.get("bomb", "miss") == "miss" or pytest.fail("served"))
    assert peak < 100 << 20  # capped at 64 MiB of output, not 256
    assert plain.counters.corrupt == 1
    # with a secret the bomb is not even inflated: it does not verify
    signed = Cache(redis_server.url, prefix=unique_prefix(), compress="zlib", secret=SECRET)
    raw.set(signed.make_key("bomb"), bytes((0x51,)) + b"\0" * 32 + bomb[1:])
    peak = _peak_during(lambda: signed.get("bomb", "miss") == "miss" or pytest.fail("served"))
    assert peak < 8 << 20
    for cache in (plain, signed):
        cache.clear()
        cache.close()
    raw.close()


@pytest.mark.parametrize("method", ["zlib", "zstd"])
def test_decompression_cap(method: str) -> None:
    codec = BytesCodec(OrjsonSerializer(), compress=method, max_decompressed_size=1 << 16)
    fits, too_big = "x" * 60_000, "x" * 70_000
    assert codec.loads(codec.dumps(fits)) == fits
    big = BytesCodec(OrjsonSerializer(), compress=method)  # another writer, default cap
    with pytest.raises(CorruptEntry, match="max_decompressed_size"):
        codec.loads(big.dumps(too_big))
    with pytest.raises(Exception, match="max_decompressed_size"):
        codec.dumps(too_big)  # never stored: it could not be read back


def test_the_signature_is_checked_before_decompressing(monkeypatch: pytest.MonkeyPatch) -> None:
    codec = BytesCodec(OrjsonSerializer(), secret=SECRET, compress="zlib", compress_threshold=1)
    stored = bytearray(codec.dumps("x" * 5000, key="k"))
    stored[-1] ^= 1

    def inflate(*args: Any) -> bytes:
        raise AssertionError("inflated an entry that does not verify")

    monkeypatch.setattr(codec, "_decompress", inflate)
    with pytest.raises(CorruptEntry, match="signature"):
        codec.loads(bytes(stored), "k")


def test_a_cache_without_the_secret_refuses_signed_entries() -> None:
    signed = BytesCodec(PickleSerializer(SECRET))
    plain = BytesCodec(OrjsonSerializer())
    with pytest.raises(CorruptEntry, match="no secret"):
        plain.loads(signed.dumps({"a": 1}, key="k"), "k")
    other = BytesCodec(PickleSerializer("another secret"))
    with pytest.raises(CorruptEntry, match="signature"):
        signed.loads(other.dumps(Exploit(), key="k"), "k")
    assert EXECUTED == []
    with pytest.raises(UnsignedCounter):
        signed.loads(b"12", "k")


# -- properties ---------------------------------------------------------------------------
CODECS = [
    BytesCodec(PickleSerializer(SECRET)),
    BytesCodec(OrjsonSerializer(), secret=SECRET, compress="zlib", compress_threshold=16),
    BytesCodec(OrjsonSerializer(), secret=SECRET, compress="zstd", compress_threshold=16),
]
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(), children),
    max_leaves=10,
)
metas = st.none() | st.fixed_dictionaries({"tags": st.lists(st.text(max_size=5), max_size=3)})
keys = st.text(min_size=1, max_size=30)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(CODECS), json_values, metas, keys)
def test_sign_verify_round_trip_is_exact(
    codec: BytesCodec, value: Any, meta: dict[str, Any] | None, key: str
) -> None:
    stored = codec.dumps(value, meta, key)
    assert codec.loads_meta(stored, key) == (value, meta)
    assert codec.loads(stored, key) == value


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(CODECS), json_values, metas, keys, st.data())
def test_any_change_is_refused(
    codec: BytesCodec, value: Any, meta: dict[str, Any] | None, key: str, data: st.DataObject
) -> None:
    stored = codec.dumps(value, meta, key)
    at = data.draw(st.integers(0, len(stored) - 1))
    flip = data.draw(st.integers(1, 255))
    tampered = bytearray(stored)
    tampered[at] ^= flip
    with pytest.raises(CorruptEntry):
        codec.loads_meta(bytes(tampered), key)
    with pytest.raises(CorruptEntry):
        codec.loads_meta(stored[: data.draw(st.integers(0, len(stored) - 1))], key)
    other = data.draw(keys)
    if other != key:
        with pytest.raises(CorruptEntry):
            codec.loads_meta(stored, other)


def test_the_cap_is_an_option(redis_server: RedisServer) -> None:
    cache = Cache(
        redis_server.url, prefix=unique_prefix(), compress="zlib", max_decompressed_size=1 << 16
    )
    assert cache.set("small", "x" * 60_000) and cache.get("small") == "x" * 60_000
    with pytest.raises(SerializationError, match="max_decompressed_size"):
        cache.set("big", "x" * 70_000)  # it could never be read back: refused, not stored
    assert cache.get("big", "miss") == "miss"
    cache.clear()
    cache.close()


def test_a_pickle_serializer_object_brings_its_secret(
    redis_server: RedisServer, raw: redis.Redis
) -> None:
    cache = Cache(redis_server.url, prefix=unique_prefix(), serializer=PickleSerializer(SECRET))
    cache.set("perm:alice", {"admin": True})
    raw.set(cache.make_key("perm:mallory"), raw.get(cache.make_key("perm:alice")) or b"")
    assert cache.get("perm:alice") == {"admin": True}
    assert cache.get("perm:mallory", "miss") == "miss"
    cache.clear()
    cache.close()
