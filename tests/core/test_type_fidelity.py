"""Type-faithful hits: the second call of a cached function returns what the first did.

Every case runs on memory (objects as is), memory with the orjson serializer, a real
redis-server and fakeredis; sync and async; plain and with stampede protection. "Same"
means equal values of the same type, all the way down (``type(a) is type(b)``).
"""

from __future__ import annotations

import dataclasses
import enum
import logging
import math
import uuid
from collections.abc import Callable, Iterator
from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal
from typing import Any, NamedTuple, Optional

import orjson
import pydantic
import pytest
from conftest import unique_prefix
from hypothesis import given, settings
from hypothesis import strategies as st

from cachekit import Cache
from cachekit.core.typed import _json_shaped
from cachekit.serializers import OrjsonSerializer
from cachekit.testing.servers import RedisServer


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


@dataclasses.dataclass
class Point:
    x: int
    when: datetime
    tags: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class Pair:
    left: Point
    right: Point | None


class Row(NamedTuple):
    id: int
    name: str


class User(pydantic.BaseModel):
    id: int
    name: str
    seen: datetime
    roles: tuple[str, ...]


WHEN = datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=timezone.utc)
POINT = Point(1, WHEN, ("a", "b"))

# (id, return annotation, value)
CASES: list[tuple[str, Any, Any]] = [
    ("tuple", tuple[int, int], (1, 2)),
    ("var-tuple", tuple[str, ...], ("a", "b", "c")),
    ("nested", dict[str, list[tuple[int, str]]], {"a": [(1, "x"), (2, "y")]}),
    ("set", set[str], {"a", "b"}),
    ("frozenset", frozenset[int], frozenset({1, 2})),
    ("set-of-tuples", set[tuple[int, int]], {(1, 2), (3, 4)}),
    ("datetime", datetime, WHEN),
    ("naive-datetime", datetime, datetime(2024, 1, 2, 3, 4, 5)),
    ("date", date, date(2024, 2, 29)),
    ("time", time, time(23, 59, 58, 1)),
    ("timedelta", timedelta, timedelta(days=2, seconds=5, microseconds=7)),
    ("uuid", uuid.UUID, uuid.UUID(int=12345)),
    ("decimal", Decimal, Decimal("1.50")),
    ("enum", Color, Color.BLUE),
    ("int-enum", Level, Level.HIGH),
    ("int-keyed-dict", dict[int, str], {5: "a", 7: "b"}),
    ("date-keyed-dict", dict[date, int], {date(2024, 1, 1): 3}),
    ("bytes", bytes, b"\x00\xffbinary"),
    ("dataclass", Point, POINT),
    ("nested-dataclass", Pair, Pair(POINT, None)),
    ("list-of-dataclasses", list[Point], [POINT, Point(2, WHEN)]),
    ("optional-some", Optional[Point], POINT),  # noqa: UP045  # typing.Union, on purpose
    ("optional-none", Point | None, None),
    ("union", int | str, "x"),
    ("namedtuple", Row, Row(1, "a")),
    ("pydantic", User, User(id=1, name="ada", seen=WHEN, roles=("admin",))),
    ("nan", float, math.nan),
    ("inf", list[float], [math.inf, -math.inf, 1.5]),
    ("big-int", int, 2**80),
    ("plain-json", dict[str, Any], {"a": 1, "b": [1, "x", None], "c": {"d": True}}),
]
CASE_IDS = [case[0] for case in CASES]


def assert_same(a: Any, b: Any) -> None:
    """Equal and of the same type, recursively (NaN equals NaN)."""
    assert type(a) is type(b), f"{a!r} ({type(a).__name__}) vs {b!r} ({type(b).__name__})"
    if isinstance(a, float) and math.isnan(a):
        assert math.isnan(b)
    elif isinstance(a, dict):
        assert {(type(k), k) for k in a} == {(type(k), k) for k in b}
        for key in a:
            assert_same(a[key], b[key])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            assert_same(x, y)
    elif isinstance(a, (set, frozenset)):
        assert {(type(x), x) for x in a} == {(type(x), x) for x in b}
    elif dataclasses.is_dataclass(a):
        for field in dataclasses.fields(a):
            assert_same(getattr(a, field.name), getattr(b, field.name))
    elif isinstance(a, pydantic.BaseModel):
        assert_same(a.model_dump(), b.model_dump())
    else:
        assert a == b
        if isinstance(a, datetime):
            assert a.utcoffset() == b.utcoffset()


KINDS = ["memory", "memory-orjson", "redis", "fakeredis"]


@pytest.fixture(params=KINDS)
def cache(request: pytest.FixtureRequest) -> Iterator[Cache]:
    kind = request.param
    if kind == "memory":
        made = Cache("memory://", prefix=unique_prefix())
    elif kind == "memory-orjson":
        made = Cache("memory://", prefix=unique_prefix(), serializer="orjson")
    elif kind == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        made = Cache(server.url, prefix=unique_prefix())
    else:
        made = Cache("fakeredis://", prefix=unique_prefix())
    yield made
    made.clear()
    made.close()


def _annotated(func: Callable[..., Any], annotation: Any) -> Callable[..., Any]:
    func.__annotations__ = {"n": int, "return": annotation}
    return func


OPTIONS = {
    "plain": {},
    "lock": {"lock": True},
    "stale": {"stale_ttl": 30},
    "tags": {"tags": ("t",)},
}


@pytest.mark.parametrize("options", list(OPTIONS), ids=list(OPTIONS))
@pytest.mark.parametrize(("case", "annotation", "value"), CASES, ids=CASE_IDS)
def test_sync_hit_is_the_miss(
    cache: Cache, case: str, annotation: Any, value: Any, options: str
) -> None:
    runs: list[int] = []

    def compute(n: int):  # type: ignore[no-untyped-def]
        runs.append(n)
        return value

    cached = cache.cached(ttl=60, **OPTIONS[options])(_annotated(compute, annotation))
    miss = cached(1)
    hit = cached(1)
    assert runs == [1], "the second call must be a hit"
    assert_same(value, miss)
    assert_same(miss, hit)
    assert_same(value, cached(1))


@pytest.mark.parametrize("options", list(OPTIONS), ids=list(OPTIONS))
@pytest.mark.parametrize(("case", "annotation", "value"), CASES, ids=CASE_IDS)
async def test_async_hit_is_the_miss(
    cache: Cache, case: str, annotation: Any, value: Any, options: str
) -> None:
    runs: list[int] = []

    async def compute(n: int):  # type: ignore[no-untyped-def]
        runs.append(n)
        return value

    cached = cache.cached(ttl=60, **OPTIONS[options])(_annotated(compute, annotation))
    miss = await cached(1)
    hit = await cached(1)
    assert runs == [1], "the second call must be a hit"
    assert_same(value, miss)
    assert_same(miss, hit)
    await cache.aclose()


@pytest.mark.parametrize(("case", "annotation", "value"), CASES, ids=CASE_IDS)
def test_unannotated_miss_returns_what_a_hit_returns(
    cache: Cache, case: str, annotation: Any, value: Any
) -> None:
    runs: list[int] = []

    @cache.cached(ttl=60)
    def compute(n):  # type: ignore[no-untyped-def]
        runs.append(n)
        return value

    miss, hit = compute(1), compute(1)
    assert runs == [1]
    assert_same(miss, hit)


@pytest.mark.parametrize("kind", ["redis", "fakeredis"])
def test_unannotated_tuple_on_redis_is_a_list_both_times(
    kind: str, request: pytest.FixtureRequest
) -> None:
    url = request.getfixturevalue("redis_server").url if kind == "redis" else "fakeredis://"
    cache = Cache(url, prefix=unique_prefix())

    @cache.cached(ttl=60)
    def pair(n):  # type: ignore[no-untyped-def]
        return (n, n + 1)

    assert pair(1) == [1, 2] and pair(1) == [1, 2]  # the miss matches the hit
    cache.clear()
    cache.close()


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
@pytest.mark.parametrize("options", list(OPTIONS), ids=list(OPTIONS))
async def test_refresh_returns_what_a_hit_returns(
    cache: Cache, options: str, is_async: bool
) -> None:
    def pair(n: int) -> tuple[int, int]:
        return (n, n)

    def unannotated(n):  # type: ignore[no-untyped-def]
        return (n, n)

    async def apair(n: int) -> tuple[int, int]:
        return (n, n)

    async def aunannotated(n):  # type: ignore[no-untyped-def]
        return (n, n)

    funcs = [apair, aunannotated] if is_async else [pair, unannotated]
    for func in funcs:
        cached: Any = cache.cached(ttl=60, **OPTIONS[options])(func)
        refreshed = (await cached.arefresh(1)) if is_async else cached.refresh(1)
        hit = (await cached(1)) if is_async else cached(1)
        assert_same(refreshed, hit)
    await cache.aclose()


# -- the README's bytes example (Front door, defect 2) -----------------------------------
async def test_bytes_function_is_cached_on_redis(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    cache = Cache(redis_server.url, prefix=unique_prefix())
    runs: list[str] = []

    @cache.cached(ttl=60)
    async def fetch(url: str) -> bytes:
        runs.append(url)
        return b"\x89PNG\r\n\x1a\n" + url.encode()

    with caplog.at_level(logging.WARNING, logger="cachekit"):
        results = [await fetch("https://example.com/logo.png") for _ in range(100)]
    assert runs == ["https://example.com/logo.png"]
    assert all(r == results[0] and type(r) is bytes for r in results)
    assert len([r for r in caplog.records if r.name.startswith("cachekit")]) <= 1
    assert cache.stats()["hits"] == 99
    await cache.aclear()
    await cache.aclose()


@pytest.mark.parametrize("options", list(OPTIONS), ids=list(OPTIONS))
def test_sets_are_cached_on_redis(redis_server: RedisServer, options: str) -> None:
    cache = Cache(redis_server.url, prefix=unique_prefix())
    runs: list[int] = []

    @cache.cached(ttl=60, **OPTIONS[options])
    def tags(n):  # type: ignore[no-untyped-def]  # no annotation: the serializer is faithful
        runs.append(n)
        return {"a", "b"}

    assert [tags(1) for _ in range(10)] == [{"a", "b"}] * 10
    assert runs == [1]
    cache.clear()
    cache.close()


class Opaque:
    pass


@pytest.mark.parametrize("options", list(OPTIONS), ids=list(OPTIONS))
@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
async def test_unstorable_value_is_logged_once_per_function(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture, options: str, is_async: bool
) -> None:
    cache = Cache(redis_server.url, prefix=unique_prefix())
    runs: list[int] = []

    def make(n: int) -> Opaque:
        runs.append(n)
        return Opaque()

    async def amake(n: int) -> Opaque:
        return make(n)

    cached: Any = cache.cached(ttl=60, **OPTIONS[options])(amake if is_async else make)
    with caplog.at_level(logging.WARNING, logger="cachekit"):
        for n in range(100):
            result = (await cached(n % 3)) if is_async else cached(n % 3)
            assert type(result) is Opaque  # the function's result, though not cached
    assert len(runs) == 100
    lines = [r for r in caplog.records if r.name.startswith("cachekit")]
    assert len(lines) == 1, [r.getMessage() for r in lines]
    assert "Opaque" in lines[0].getMessage() and "make" in lines[0].getMessage()
    assert cache.stats()["unencodable"] == 100
    await cache.aclose()
    cache.close()


# -- annotations ---------------------------------------------------------------------------
def test_entry_written_by_older_cachekit_is_decoded(redis_server: RedisServer) -> None:
    """Old entries (orjson with OPT_NON_STR_KEYS, no tags) still read, into the type."""
    cache = Cache(redis_server.url, prefix=unique_prefix())

    @cache.cached(ttl=60)
    def when(n: int) -> datetime:
        raise AssertionError("must be a hit")

    @cache.cached(ttl=60)
    def index(n: int) -> dict[int, tuple[int, int]]:
        raise AssertionError("must be a hit")

    @cache.cached(ttl=60)
    def plain(n: int):  # type: ignore[no-untyped-def]
        raise AssertionError("must be a hit")

    old = orjson.OPT_NON_STR_KEYS
    raw = cache._backend
    raw.set(cache.make_key(when.key(1)), b"\x01" + orjson.dumps(WHEN, option=old), 60)  # type: ignore[attr-defined]
    raw.set(cache.make_key(index.key(1)), b"\x01" + orjson.dumps({5: (1, 2)}, option=old), 60)  # type: ignore[attr-defined]
    raw.set(cache.make_key(plain.key(1)), b"\x01" + orjson.dumps({"a": [1]}, option=old), 60)  # type: ignore[attr-defined]
    assert_same(when(1), WHEN)
    assert_same(index(1), {5: (1, 2)})
    assert_same(plain(1), {"a": [1]})
    cache.clear()
    cache.close()


def test_cached_value_not_fitting_the_annotation_is_recomputed(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """An entry of another shape (the function changed) is a miss, never returned."""
    cache = Cache(redis_server.url, prefix=unique_prefix())
    runs: list[int] = []

    @cache.cached(ttl=60)
    def point(n: int) -> Point:
        runs.append(n)
        return POINT

    cache.set(point.key(1), {"something": "else"})  # type: ignore[attr-defined]
    with caplog.at_level(logging.WARNING, logger="cachekit"):
        assert_same(point(1), POINT)
        assert_same(point(1), POINT)
    assert runs == [1]
    assert len([r for r in caplog.records if "does not fit" in r.getMessage()]) == 1
    cache.clear()
    cache.close()


@dataclasses.dataclass
class _Late:
    n: int
    at: tuple[int, int]


def test_forward_reference_resolved_at_first_call(redis_server: RedisServer) -> None:
    """A name not defined when the decorator runs (a method returning its own class) is
    resolved at the first call."""
    cache = Cache(redis_server.url, prefix=unique_prefix())
    globals().pop("LateType", None)

    @cache.cached(ttl=60)
    def make(n: int) -> LateType:  # type: ignore[name-defined]  # noqa: F821
        return _Late(n, (n, n))

    globals()["LateType"] = _Late  # defined after the decoration, before the first call
    try:
        assert_same(make(1), _Late(1, (1, 1)))
        assert_same(make(1), _Late(1, (1, 1)))
    finally:
        globals().pop("LateType", None)
    cache.clear()
    cache.close()


def test_unresolvable_annotation_falls_back_to_the_round_trip(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    cache = Cache(redis_server.url, prefix=unique_prefix())

    @cache.cached(ttl=60)
    def make(n: int) -> NoSuchType:  # type: ignore[name-defined]  # noqa: F821
        return (n, n)

    with caplog.at_level(logging.WARNING, logger="cachekit"):
        assert make(1) == [1, 1] and make(1) == [1, 1]  # the miss matches the hit
    assert len([r for r in caplog.records if "does not resolve" in r.getMessage()]) == 1
    cache.clear()
    cache.close()


def test_local_class_named_by_a_string_annotation(redis_server: RedisServer) -> None:
    cache = Cache(redis_server.url, prefix=unique_prefix())

    @dataclasses.dataclass
    class Local:
        n: int
        at: tuple[int, int]

    @cache.cached(ttl=60)
    def make(n: int) -> Local:  # "Local" (from __future__ import annotations): a local name
        return Local(n, (n, n))

    assert_same(make(1), Local(1, (1, 1)))
    assert_same(make(1), Local(1, (1, 1)))
    cache.clear()
    cache.close()


def test_json_shaped_annotations_are_not_converted() -> None:
    plain: list[Any] = [dict, list, str, int, float, bool, Any, type(None), dict[str, Any]]
    plain += [list[dict[str, int]], Optional[str], int | None, dict[str, list[str | None]]]  # noqa: UP045
    for tp in plain:
        assert _json_shaped(tp), tp
    typed: list[Any] = [tuple[int], datetime, dict[int, str], set[str], Point, Point | None]
    typed += [bytes, list[tuple[int, int]], Color, uuid.UUID, Decimal, Row, User]
    for tp in typed:
        assert not _json_shaped(tp), tp


# -- the serializer ------------------------------------------------------------------------
def test_plain_json_payload_is_unchanged() -> None:
    s = OrjsonSerializer()
    value = {"id": 42, "name": "Ada", "roles": ["a", "b"], "active": True, "x": None}
    assert s.dumps(value) == orjson.dumps(value)
    assert s.loads(orjson.dumps(value)) == value


json_leaves = (
    st.none() | st.booleans() | st.integers() | st.floats() | st.text() | st.binary()
    | st.decimals(allow_nan=False) | st.datetimes() | st.dates() | st.times()
    | st.timedeltas()
)  # fmt: skip
hashables = st.none() | st.booleans() | st.integers() | st.text() | st.dates()
values = st.recursive(
    json_leaves,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.text(max_size=5) | st.just("!ck"), children, max_size=4)
        | st.dictionaries(hashables, children, max_size=4)
        | st.sets(hashables, max_size=4)
        | st.frozensets(st.tuples(st.integers(), st.text()), max_size=3)
    ),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(values)
def test_orjson_round_trip_is_exact(value: Any) -> None:
    s = OrjsonSerializer()
    assert_same(value, s.loads(s.dumps(value)))


@dataclasses.dataclass
class Plain:
    n: int
    name: str


OTHER_SERIALIZER_CASES: list[tuple[str, Any, Any]] = [
    ("tuple", tuple[int, int], (1, 2)),
    ("dataclass", Plain, Plain(1, "a")),
    ("int-keyed-dict", dict[int, str], {5: "a"}),
    ("enum", Color, Color.RED),
    ("unannotated-tuple", None, (1, 2)),
]


OTHER_SERIALIZER_PARAMS = [
    pytest.param(serializer, *case, id=f"{serializer}-{case[0]}")
    for serializer in ("json", "msgpack", "pickle")
    for case in OTHER_SERIALIZER_CASES
    # json and msgpack cannot encode dataclasses or Enums (as before: logged once, returned)
    if serializer == "pickle" or case[0] not in ("dataclass", "enum")
]


@pytest.mark.parametrize(("serializer", "case", "annotation", "value"), OTHER_SERIALIZER_PARAMS)
def test_other_serializers_hit_is_the_miss(
    serializer: str, case: str, annotation: Any, value: Any
) -> None:
    secret = "s3cret" if serializer == "pickle" else None
    cache = Cache("fakeredis://", prefix=unique_prefix(), serializer=serializer, secret=secret)
    runs: list[int] = []

    def compute(n):  # type: ignore[no-untyped-def]
        runs.append(n)
        return value

    if annotation is not None:
        compute = _annotated(compute, annotation)
    elif serializer != "pickle" and case == "unannotated-tuple":
        value = list(value)  # JSON and msgpack have no tuples: both calls give a list
    cached = cache.cached(ttl=60)(compute)
    miss, hit = cached(1), cached(1)
    assert runs == [1]
    assert_same(miss, hit)
    if serializer == "pickle" or annotation is not None:
        assert_same(value, miss)
    cache.clear()
    cache.close()


@pytest.mark.parametrize(
    "value",
    [
        {"a", "b"},
        frozenset({(1, 2)}),
        WHEN,
        date(2024, 1, 1),
        time(1, 2),
        timedelta(days=1),
        Decimal("1.50"),
        {5: b"x", "n": math.nan},
    ],  # fmt: skip
    ids=["set", "frozenset", "datetime", "date", "time", "timedelta", "decimal", "mixed"],
)
def test_msgpack_keeps_the_types_it_can_tag(value: Any) -> None:
    cache = Cache("fakeredis://", prefix=unique_prefix(), serializer="msgpack")
    runs: list[int] = []

    @cache.cached(ttl=60)
    def compute(n):  # type: ignore[no-untyped-def]  # no annotation: the serializer keeps it
        runs.append(n)
        return value

    miss, hit = compute(1), compute(1)
    assert runs == [1]
    assert_same(value, miss)
    assert_same(value, hit)
    cache.clear()
    cache.close()


# The miss's round trip decodes the entry the store just encoded (one encode per miss, not
# two): what it returns must still be what a hit returns, whatever the entry's envelope.
ENVELOPES = {
    "plain": {},
    "signed": {"secret": "s3cret"},
    "compressed": {"compress": "zlib", "compress_threshold": 16},
    "signed-compressed": {"secret": "s3cret", "compress": "zlib", "compress_threshold": 16},
    "tagged": {},
    "signed-tagged": {"secret": "s3cret"},
}
ROUND_TRIPPED = [
    ("tuple", (1, "a", (2.5, None))),
    ("int-keys", {5: "a", "n": [1, 2]}),
    ("bytes-inside", {"raw": b"\x00\xff", "when": WHEN}),
    ("plain-json", {"id": 42, "name": "Ada", "roles": ["admin"], "x": 1.5}),
    ("long", {"text": "x" * 200, "items": list(range(50))}),
]


@pytest.mark.parametrize("envelope", list(ENVELOPES), ids=list(ENVELOPES))
@pytest.mark.parametrize(("case", "value"), ROUND_TRIPPED, ids=[c for c, _ in ROUND_TRIPPED])
@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
async def test_unannotated_miss_is_the_hit_in_every_envelope(
    redis_server: RedisServer, envelope: str, case: str, value: Any, is_async: bool
) -> None:
    cache = Cache(redis_server.url, prefix=unique_prefix(), **ENVELOPES[envelope])
    tags = ("t",) if "tagged" in envelope else None
    runs: list[int] = []
    if is_async:

        @cache.cached(ttl=60, tags=tags)
        async def acompute(n):  # type: ignore[no-untyped-def]
            runs.append(n)
            return value

        miss, hit = await acompute(1), await acompute(1)
    else:

        @cache.cached(ttl=60, tags=tags)
        def compute(n):  # type: ignore[no-untyped-def]
            runs.append(n)
            return value

        miss, hit = compute(1), compute(1)
    assert runs == [1], "the second call must be a hit"
    assert_same(miss, hit)
    serializer = OrjsonSerializer()
    assert_same(miss, serializer.loads(serializer.dumps(value)))
    await cache.aclear()
    await cache.aclose()
    cache.close()


@pytest.mark.parametrize("kind", ["redis", "memory-orjson"])
def test_an_unannotated_miss_serializes_its_value_once(
    kind: str, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The miss's round trip (what a hit will return) is decoded from the entry the store
    encoded, not from a second encoding of the value."""
    if kind == "redis":
        cache = Cache(request.getfixturevalue("redis_server").url, prefix=unique_prefix())
    else:
        cache = Cache("memory://", prefix=unique_prefix(), serializer="orjson")
    codec: Any = cache._codec
    encodes: list[Any] = []
    dumps = codec.serializer.dumps

    def counting(value: Any) -> bytes:
        encodes.append(value)
        return dumps(value)  # type: ignore[no-any-return]

    monkeypatch.setattr(codec.serializer, "dumps", counting)  # what the rules call
    monkeypatch.setattr(codec, "_dumps", counting)  # what the store calls

    @cache.cached(ttl=60)
    def compute(n):  # type: ignore[no-untyped-def]
        return {"n": n, "pair": (n, n)}

    assert compute(1) == {"n": 1, "pair": [1, 1]}
    assert compute(1) == {"n": 1, "pair": [1, 1]}  # the hit, the same
    assert len(encodes) == 1
    cache.clear()
    cache.close()
