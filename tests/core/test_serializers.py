from __future__ import annotations

import dataclasses
import datetime
import logging
import pickle
import uuid
from collections.abc import Iterator

import pytest
import redis

from cachekit import Cache, ConfigurationError, SerializationError
from cachekit.core.codec import BytesCodec, CorruptEntry
from cachekit.serializers import (
    JsonSerializer,
    MsgpackSerializer,
    OrjsonSerializer,
    PickleSerializer,
    RawSerializer,
    TextSerializer,
    get_serializer,
)
from cachekit.testing.servers import RedisServer

from conftest import unique_prefix

EXECUTED: list[str] = []


def _mark_executed() -> None:
    EXECUTED.append("pwned")


class Exploit:
    def __reduce__(self) -> tuple[object, tuple[()]]:
        return (_mark_executed, ())


@dataclasses.dataclass
class Point:
    x: int
    y: int


@pytest.fixture
def redis_cache(redis_server: RedisServer) -> Iterator[Cache]:
    cache = Cache(redis_server.url, prefix=unique_prefix(), serializer="pickle", secret="s3cret")
    yield cache
    cache.clear()
    cache.close()


@pytest.mark.parametrize(
    "serializer", [OrjsonSerializer(), JsonSerializer(), MsgpackSerializer()], ids=lambda s: s.name
)
def test_round_trip(serializer: object) -> None:
    value = {"a": [1, 2.5, "x", None, True], "b": {"c": "ünï"}}
    assert serializer.loads(serializer.dumps(value)) == value  # type: ignore[attr-defined]


def test_orjson_native_types() -> None:
    s = OrjsonSerializer()
    when = datetime.datetime(2026, 1, 2, 3, 4, 5)
    ident = uuid.UUID(int=5)
    # datetimes are tagged and come back as datetimes; dataclasses and UUIDs are written
    # as their JSON form (@cached decodes them into the return annotation)
    assert s.loads(s.dumps({"p": Point(1, 2), "t": when, "u": ident})) == {
        "p": {"x": 1, "y": 2},
        "t": when,
        "u": str(ident),
    }


class Opaque:
    pass


@pytest.mark.parametrize("name", ["orjson", "json", "msgpack", "text"])
def test_unencodable_names_the_type(name: str) -> None:
    with pytest.raises(SerializationError, match="Opaque"):
        get_serializer(name).dumps(Opaque())


def test_unencodable_is_not_written(redis_server: RedisServer) -> None:
    cache = Cache(redis_server.url, prefix=unique_prefix())
    with pytest.raises(SerializationError, match="object"):
        cache.set("k", object())
    assert not cache.exists("k")
    cache.close()


def test_raw_and_text() -> None:
    assert RawSerializer().loads(RawSerializer().dumps("é")) == "é".encode()
    assert RawSerializer().dumps(b"\x00\x01") == b"\x00\x01"
    assert TextSerializer().loads(TextSerializer().dumps("é")) == "é"
    with pytest.raises(SerializationError):
        RawSerializer().dumps(5)


def test_pickle_needs_a_secret() -> None:
    with pytest.raises(ConfigurationError, match="secret"):
        Cache(serializer="pickle")
    with pytest.raises(ConfigurationError, match="unknown serializer"):
        Cache(serializer="yaml")


def test_pickle_round_trip_and_signature(redis_cache: Cache) -> None:
    redis_cache.set("p", Point(3, 4))
    assert redis_cache.get("p") == Point(3, 4)


def test_tampered_pickle_is_refused_never_unpickled(
    redis_cache: Cache, caplog: pytest.LogCaptureFixture
) -> None:
    raw = redis.Redis.from_url(redis_cache.url)
    evil = pickle.dumps(Exploit())
    # a foreign pickle with a forged (wrong) signature, and one signed with another secret
    raw.set(redis_cache.make_key("forged"), b"\x01" + b"\x00" * 32 + evil)
    other = BytesCodec(PickleSerializer("other-secret"))
    raw.set(redis_cache.make_key("foreign"), other.dumps(Exploit()))
    with caplog.at_level(logging.WARNING, logger="cachekit"):
        assert redis_cache.get("forged", "miss") == "miss"
        assert redis_cache.get("foreign", "miss") == "miss"
    assert EXECUTED == []
    assert sum("signature" in r.message for r in caplog.records) == 2
    raw.close()


@pytest.mark.parametrize("method", ["zlib", "zstd"])
def test_compression_above_threshold(method: str) -> None:
    codec = BytesCodec(OrjsonSerializer(), compress=method, compress_threshold=100)
    small, big = "x" * 10, "y" * 10_000
    stored_small, stored_big = codec.dumps(small), codec.dumps(big)
    assert stored_small[0] == 0x01  # under the threshold: not compressed
    assert stored_big[0] & 0xF0 and len(stored_big) < 500
    assert codec.loads(stored_small) == small and codec.loads(stored_big) == big
    meta = codec.dumps(big, {"tags": ["t"]})
    assert codec.loads_meta(meta) == (big, {"tags": ["t"]})


def test_compressed_cache_round_trip(redis_server: RedisServer) -> None:
    cache = Cache(redis_server.url, prefix=unique_prefix(), compress="auto")
    value = {"rows": ["lorem ipsum dolor"] * 2000}
    cache.set("big", value)
    assert cache.get("big") == value
    raw = redis.Redis.from_url(redis_server.url)
    assert len(raw.get(cache.make_key("big")) or b"") < len(str(value)) / 4
    raw.close()
    cache.clear()
    cache.close()


def test_codec_rejects_garbage() -> None:
    codec = BytesCodec(OrjsonSerializer())
    for stored in [b"", b"\x7f", b"\x02\x00\x05ab", b"plain text"]:
        with pytest.raises(CorruptEntry):
            codec.loads(stored)
    assert codec.loads(b"-12") == -12
