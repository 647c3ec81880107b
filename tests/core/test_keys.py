from __future__ import annotations

import dataclasses
import enum
import logging
import math
import pathlib
import uuid
from collections import OrderedDict
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any, NamedTuple

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cachekit import Cache, CacheKitError, ConfigurationError, InvalidKeyError
from cachekit.core.keys import MAX_KEY_LENGTH, KeyBuilder, Namespace, escape_glob, normalize_key
from conftest import unique_prefix


def test_normalize_key() -> None:
    assert normalize_key("a b\nc") == "a b\nc"
    assert normalize_key(42) == "42"
    assert normalize_key(("user", 42)) == "user:42"
    assert normalize_key(b"raw") == "raw"
    assert normalize_key(uuid.UUID(int=1)) == str(uuid.UUID(int=1))
    long = normalize_key("x" * 1000)
    assert len(long) < MAX_KEY_LENGTH and long != normalize_key("x" * 1001)
    with pytest.raises(InvalidKeyError, match="object"):
        normalize_key(object())


def test_user_keys_do_not_collide() -> None:
    # tuple parts ran together ("a:b:c" for both); non-UTF-8 bytes were backslash-escaped
    assert normalize_key(("a:b", "c")) != normalize_key(("a", "b:c"))
    assert normalize_key(("a:b", "c")) == "a%3Ab:c"
    assert normalize_key(("a%3Ab",)) != normalize_key(("a:b",))
    assert normalize_key(b"\x80") != normalize_key("\\x80")
    assert normalize_key(b"\x80") == "…#b80" == normalize_key("…#b80")  # taken as given
    assert normalize_key(("k", b"\x80")) != normalize_key(("k", "\\x80"))
    # the documented equivalences stay
    assert normalize_key(("user", 42)) == normalize_key(["user", "42"]) == "user:42"
    assert normalize_key(42) == normalize_key("42") == "42"
    assert normalize_key(True) == "true" and normalize_key(1.5) == "1.5"
    assert normalize_key(b"caf\xc3\xa9") == normalize_key("café") == "café"
    assert normalize_key(date(2020, 1, 1)) == "2020-01-01"
    with pytest.raises(InvalidKeyError, match="empty"):
        normalize_key(())

    class Named(int):
        def __str__(self) -> str:
            return "seven"

    assert normalize_key(Named(7)) == "7"  # the int's text, not what a subclass prints


def _documented_text(key: Any) -> str:
    """What the docstring of normalize_key says a key is the same key as (before hashing)."""
    if isinstance(key, bytes):
        try:
            return key.decode("utf-8")
        except UnicodeDecodeError:
            return "…#b" + key.hex()
    if isinstance(key, tuple):
        texts = [_documented_text(part) for part in key]
        return ":".join(t.replace("%", "%25").replace(":", "%3A") for t in texts)
    return str(key)


# small alphabets, so that separators, escapes and tags meet often
_chars = st.sampled_from(
    ["a", "b", "8", "0", "2", "5", "3", "A", ":", "%", "\\", "x", "…", "#", "\ud800", "\udc00"]
)
_leaves = (
    st.text(_chars, max_size=6)
    | st.binary(max_size=3).map(lambda b: b.replace(b"\x00", b"\x80"))
    | st.integers(-3, 300)
)
_user_keys = st.recursive(
    _leaves, lambda inner: st.tuples(inner, inner) | st.tuples(inner), max_leaves=4
)


@settings(max_examples=400, deadline=None)
@given(_user_keys, _user_keys)
def test_user_keys_are_injective(one: Any, other: Any) -> None:
    # equal normalised keys exactly when the documented texts are equal
    same = _documented(one) == _documented(other)
    assert (normalize_key(one) == normalize_key(other)) is same
    assert normalize_key(normalize_key(one)) == normalize_key(one)  # f.key() round trips
    normalize_key(one).encode("utf-8")  # every key is one a Redis client can send


def _documented(key: Any) -> str:
    """A text with a lone surrogate is the same key as its surrogatepass bytes."""
    text = _documented_text(key)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return _documented_text(text.encode("utf-8", "surrogatepass"))
    return text


@pytest.mark.parametrize("kind", ["memory", "redis"])
def test_lone_surrogates_in_keys_work_alike_on_memory_and_redis(
    kind: str, request: pytest.FixtureRequest, caplog: pytest.LogCaptureFixture
) -> None:
    """redis-py encodes keys as strict UTF-8: a user key or a template value with a lone
    surrogate was a miss and a "redis error" log line per call on Redis (BackendError with
    on_error="raise"), while memory took it. Keys are UTF-8 for every str now."""
    url = "memory://" if kind == "memory" else request.getfixturevalue("redis_url")
    cache = Cache(url, prefix=unique_prefix(), on_error="raise")
    keys: list[Any] = ["\ud800", "\udc00", "a\udfffb", ("u", "\ud800"), "x\ud800" * 100]
    try:
        with caplog.at_level(logging.WARNING, logger="cachekit"):
            for index, key in enumerate(keys):
                assert cache.set(key, index) and cache.get(key) == index
                assert cache.get_many([key]) == {key: index}
            assert len({cache.make_key(key) for key in keys}) == len(keys)
            assert cache.get(b"\xed\xa0\x80") == 0  # documented: its surrogatepass bytes
            assert cache.get("\ud801", "miss") == "miss"

            calls: list[str] = []

            @cache.cached(key="user:{}:x")
            def by_template(name: str) -> int:
                calls.append(name)
                return len(name)

            @cache.cached()
            def by_default(name: str) -> int:
                calls.append(name)
                return len(name)

            for func in (by_template, by_default):
                for value in ("\ud800", "\udc00", "\ud800" * 300):
                    assert func(value) == len(value) and func(value) == len(value)
            assert len(calls) == 6  # one computation each, then hits
            assert cache.delete("\ud800") and cache.get("\ud800", "miss") == "miss"
        assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
        assert cache.counters.errors == 0
    finally:
        cache.clear()
        cache.close()


def test_a_type_name_with_a_lone_surrogate_keys_its_values() -> None:
    @dataclasses.dataclass(frozen=True)
    class Point:
        x: int

    Point.__qualname__ = "Point\ud800"  # orjson refused the name: a TypeError escaped
    cache = Cache("memory://")

    @cache.cached()
    def f(p: Point) -> int:
        return p.x

    assert f(Point(1)) == 1 and f(Point(2)) == 2
    assert cache.make_key(f.key(Point(1))).encode("utf-8")


def test_a_name_with_a_lone_surrogate_is_refused() -> None:
    cache = Cache("memory://")
    with pytest.raises(ConfigurationError, match="name"):
        cache.cached(name="f\ud800")(lambda: 1)
    with pytest.raises(ConfigurationError, match="version"):
        Cache(version="v\ud800")


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(_chars), min_size=1, max_size=4), st.lists(st.text(_chars), min_size=1))
def test_distinct_tuples_of_str_give_distinct_keys(one: list[str], other: list[str]) -> None:
    joined = ":".join(one)
    # the same characters cut elsewhere, or in one piece: the tuples that used to collide
    for candidate in (other, joined.split(":"), [joined], joined.split("%")):
        if candidate != one:
            assert normalize_key(tuple(one)) != normalize_key(tuple(candidate))


def test_item_keys_render_as_cached_templates_do() -> None:
    from cachekit.write.rules import item_key_builder

    user = item_key_builder("user:{}")
    assert user(42) == "user:42" and user("alice") == "user:alice" and user("a:b") == "user:a:b"

    class Opaque:
        pass

    with pytest.raises(InvalidKeyError, match="address"):
        user(Opaque())  # used to key by the object's address, which a new object reuses
    middle = item_key_builder("u:{id}:v")

    def versioned(uid: str) -> None: ...

    assert middle("a:b") == KeyBuilder(versioned, "u:{uid}:v")(("a:b",), {}) == "u:a%3Ab:v"
    assert item_key_builder("u:{0}")(7) == "u:7"


def test_namespace() -> None:
    ns = Namespace("shop", 3)
    assert ns.key("k") == "shop:3:k"
    assert ns.strip("shop:3:k") == "k"
    assert Namespace("a*[b]", 1).pattern("*") == r"a\*\[b\]:1:*"
    assert escape_glob("?") == r"\?"
    with pytest.raises(ConfigurationError):
        Namespace("")


def f(a: int, b: int = 2, *, c: str = "x") -> None: ...


def g(a: int, b: int = 2) -> None: ...


def varargs(a: int, *rest: int, **named: int) -> None: ...


def test_arguments_normalised_through_signature() -> None:
    keys = KeyBuilder(g)
    assert keys((1,), {}) == keys((1, 2), {}) == keys((), {"a": 1, "b": 2}) == keys((1,), {"b": 2})
    assert keys((1, 3), {}) != keys((1, 2), {})
    kw = KeyBuilder(f)
    assert kw((1,), {}) == kw((1,), {"c": "x"}) == kw((), {"a": 1, "b": 2, "c": "x"})
    assert kw((1,), {"c": "y"}) != kw((1,), {})
    va = KeyBuilder(varargs)
    assert va((1, 2), {}) != va((1,), {"x": 2})
    assert va((1,), {"x": 1, "y": 2}) == va((1,), {"y": 2, "x": 1})
    assert keys((1,), {}).startswith("test_keys.g:")


def test_string_and_int_arguments_differ() -> None:
    keys = KeyBuilder(g)
    assert keys((1,), {}) != keys(("1",), {})


def test_templates() -> None:
    @dataclasses.dataclass
    class User:
        id: int

    def save(user: User, force: bool = False) -> None: ...

    assert KeyBuilder(save, "user:{user.id}")((User(7),), {}) == "user:7"
    assert KeyBuilder(g, "g:{a}:{b}")((1,), {}) == "g:1:2"
    with pytest.raises(ConfigurationError, match="not a parameter"):
        KeyBuilder(g, "x:{nope}")


def test_callable_key_and_objects() -> None:
    assert KeyBuilder(g, lambda a, b=2: ("g", a))((5,), {}) == "g:5"

    class WithKey:
        def __cache_key__(self) -> str:
            return "stable"

    class Plain:
        pass

    keys = KeyBuilder(g)
    assert keys((WithKey(),), {}) == keys((WithKey(),), {})
    # no value identity: refused (id() is reused after garbage collection), never shared
    with pytest.raises(InvalidKeyError, match=r"argument 'a'.*Plain.*__cache_key__.*key="):
        keys((Plain(),), {})


def test_full_key_matches_key(tmp_path: Any) -> None:
    cache = Cache(prefix="p")

    @cache.cached
    def h(x: Any, y: int = 0) -> Any:
        return x

    for args in [(1,), ("x" * 500,), ({"b": 1, "a": 2},)]:
        h(*args)
        assert cache.exists(h.key(*args))  # type: ignore[attr-defined]


# -- injective default keys (issue 8, section 2) -------------------------------------------


class Color(enum.Enum):
    RED = 1
    GREEN = "green"


class Level(enum.IntEnum):
    LOW = 1


@dataclasses.dataclass(frozen=True)
class PointA:
    x: int
    y: int


@dataclasses.dataclass(frozen=True)
class PointB:
    x: int
    y: int


class Pair(NamedTuple):
    a: int
    b: int


def one(x: Any) -> None: ...


def key_of(value: Any) -> str:
    return KeyBuilder(one)((value,), {})


def full_key_of(value: Any) -> str:
    return KeyBuilder(one).full(Namespace("p"))((value,), {})


COLLIDING_BEFORE = [
    [None, math.nan, math.inf, -math.inf],  # all were [null]
    [PointA(1, 2), PointB(1, 2), {"x": 1, "y": 2}],
    [{1: "a"}, {"1": "a"}, {True: "a"}, {1.0: "a"}],
    [Color.RED, 1, Level.LOW, True, 1.0],
    [Color.GREEN, "green"],
    [date(2020, 1, 1), "2020-01-01", datetime(2020, 1, 1)],
    [Decimal("1.5"), "Decimal('1.5')", 1.5, Decimal("1.50")],
    [b"abc", "b:616263", bytearray(b"abc"), "abc"],
    [(1, 2), [1, 2], Pair(1, 2), {1, 2}, frozenset({1, 2})],
    [0.0, -0.0, 0, False],
    [uuid.UUID(int=1), str(uuid.UUID(int=1))],
    [2**64, str(2**64), float(2**64), 2**64 + 1],
    [PointA, "<test_keys.PointA>", PointB],
    [timedelta(1), 86400, timedelta(seconds=86400, microseconds=1)],
    [datetime(2020, 1, 1, tzinfo=timezone.utc), datetime(2020, 1, 1)],
]


@pytest.mark.parametrize("group", COLLIDING_BEFORE, ids=lambda group: repr(group[0]))
def test_distinct_values_get_distinct_keys(group: list[Any]) -> None:
    keys = [key_of(value) for value in group]
    assert len(set(keys)) == len(keys), keys
    # the specialised builder agrees with the general one, fast path or not
    assert [full_key_of(value) for value in group] == ["p:1:" + key for key in keys]


def test_common_keys_stay_readable_and_orjson_shaped() -> None:
    keys = KeyBuilder(g)
    assert keys((1, "a"), {}) == 'test_keys.g:[1,"a"]'
    assert keys((1.5, None), {}) == "test_keys.g:[1.5,null]"
    assert keys((True,), {}) == "test_keys.g:[true,2]"
    assert keys(((1, "x"),), {}) == 'test_keys.g:[(1,"x"),2]'
    assert key_of(PointA(1, 2)) == "test_keys.one:[test_keys.PointA(1,2)]"
    assert key_of(Color.RED) == "test_keys.one:[test_keys.Color(1)]"
    assert key_of(math.nan) == "test_keys.one:[nan]"


def test_big_ints_key_fine(any_cache: Cache) -> None:
    @any_cache.cached
    def double(n: int) -> int:
        return n * 2

    assert double(2**64) == 2**65 and double(2**64) == 2**65
    assert double(-(2**200)) == -(2**201)
    assert key_of(10**5000) != key_of(10**5000 + 1)  # past str()'s digit limit


def test_unkeyable_values_raise_a_clear_error() -> None:
    class Opaque:
        pass

    class Reprd:
        def __repr__(self) -> str:
            return "Reprd()"

    for value in (Opaque(), Reprd(), lambda: 1):
        with pytest.raises(InvalidKeyError) as info:
            key_of(value)
        assert isinstance(info.value, TypeError) and isinstance(info.value, CacheKitError)
        assert "__cache_key__" in str(info.value) and "key=" in str(info.value)
        assert "argument 'x'" in str(info.value)


def test_cache_key_is_tagged_with_its_type() -> None:
    class User:
        def __init__(self, id: int) -> None:
            self.id = id

        def __cache_key__(self) -> int:
            return self.id

    class Group(User):
        pass

    assert key_of(User(1)) == key_of(User(1))
    assert len({key_of(User(1)), key_of(Group(1)), key_of(1), key_of(User(2))}) == 4


def test_sentinel_defaults_key_as_the_default() -> None:
    missing = object()

    def lookup(name: str, default: Any = missing) -> Any: ...

    keys = KeyBuilder(lookup)
    full = keys.full(Namespace("p"))
    assert keys(("a",), {}) == keys(("a", missing), {}) == keys((), {"name": "a"})
    assert full(("a",), {}) == full(("a", missing), {}) == "p:1:" + keys(("a",), {})
    assert keys(("a",), {}) != keys(("a", None), {})
    with pytest.raises(InvalidKeyError, match="argument 'default'"):
        keys(("a", object()), {})


def test_subclasses_of_builtins() -> None:
    class Name(str):
        pass

    class Tagged(str):
        pass

    assert len({key_of("a"), key_of(Name("a")), key_of(Tagged("a"))}) == 3
    tagged = Tagged("a")
    tagged.extra = 1  # type: ignore[attr-defined]
    with pytest.raises(InvalidKeyError, match="state beyond"):
        key_of(tagged)
    assert key_of(OrderedDict(a=1, b=2)) != key_of(OrderedDict(b=2, a=1))  # order is its value
    assert key_of({"a": 1, "b": 2}) == key_of({"b": 2, "a": 1})  # as == says


def test_numpy_like_arrays_key_by_content() -> None:
    class FakeDtype:
        hasobject = False
        names = None
        str = "<i8"

    def array(data: bytes, shape: tuple[int, ...]) -> Any:
        # a stand-in with numpy's interface (numpy is not a test dependency)
        namespace = {"__module__": "numpy", "dtype": FakeDtype(), "tobytes": lambda self: data}
        value = type("ndarray", (), namespace)()
        value.shape = shape
        return value

    first, second = array(b"\x01" * 8000, (1000,)), array(b"\x01" * 7999 + b"\x02", (1000,))
    assert key_of(first) != key_of(second)  # the old key was the (truncated) repr
    assert key_of(array(b"\x01" * 16, (2,))) != key_of(array(b"\x01" * 16, (1, 2)))


class Account:
    """The issue's example: no value identity, so keyed by id() before."""

    def __init__(self, balance: int) -> None:
        self.balance = balance


@dataclasses.dataclass
class ValueAccount:
    balance: int


def test_methods_key_self_by_value_or_refuse(any_cache: Cache) -> None:
    @any_cache.cached
    def report(account: Any) -> int:
        return int(account.balance)

    # before: Account(i) keyed by id(), reused once collected -> another account's balance
    with pytest.raises(InvalidKeyError, match="Account"):
        report(Account(1))
    assert [report(ValueAccount(i)) for i in range(50)] == list(range(50))
    assert [report(ValueAccount(i)) for i in range(50)] == list(range(50))


# -- templates ----------------------------------------------------------------------------


def perm(user: str, resource: str) -> None: ...


def test_template_fields_cannot_run_together() -> None:
    keys = KeyBuilder(perm, "perm:{user}:{resource}")
    assert keys(("admin:x", "y"), {}) != keys(("admin", "x:y"), {})
    assert keys(("admin", "x:y"), {}) == "perm:admin:x:y"  # the last field needs nothing
    assert keys(("admin:x", "y"), {}) == "perm:admin%3Ax:y"
    assert keys(("100%3A", "y"), {}) != keys(("100:", "y"), {})
    assert KeyBuilder(g, "g:{a}:{b}")((1,), {}) == "g:1:2"
    assert KeyBuilder(g, "g/{a:03d}/{b!r}")((7, 3), {}) == "g/007/3"
    with pytest.raises(ConfigurationError, match="separated"):
        KeyBuilder(perm, "{user}{resource}")


def test_template_refuses_addresses() -> None:
    class Opaque:
        pass

    with pytest.raises(InvalidKeyError, match="address"):
        KeyBuilder(one, "x:{x}")((Opaque(),), {})


def test_shortened_keys_cannot_be_forged() -> None:
    long = "x" * 1000
    short = normalize_key(long)
    assert len(short) < MAX_KEY_LENGTH and normalize_key(short) == short  # f.key() round trip
    assert normalize_key("x" * 999 + "y") != short  # the digest covers the whole text
    forged = "x:" + short  # looks shortened, is not: hashed, never taken as another's key
    assert normalize_key(forged) != forged
    keys = KeyBuilder(one, "{x}")
    # a template argument that looks shortened is hashed too: it is another argument than
    # the long one (tests/test_attacks.py: the digest is public, so it could be forged)
    assert keys((short,), {}) != short and keys((short + "!",), {}) != short + "!"
    assert keys((long,), {}) == short


def test_pydantic_models_and_paths_key_by_value() -> None:
    pydantic = pytest.importorskip("pydantic")

    class UserModel(pydantic.BaseModel):  # type: ignore[misc,name-defined]
        id: int
        name: str

    class OtherModel(pydantic.BaseModel):  # type: ignore[misc,name-defined]
        id: int
        name: str

    assert key_of(UserModel(id=1, name="a")) == key_of(UserModel(id=1, name="a"))
    assert len({key_of(UserModel(id=1, name="a")), key_of(OtherModel(id=1, name="a"))}) == 2
    assert key_of(UserModel(id=1, name="a")) != key_of(UserModel(id=2, name="a"))
    assert key_of(pathlib.PurePosixPath("a/b")) != key_of("a/b")
    assert key_of(pathlib.PurePosixPath("a/b")) != key_of(pathlib.PureWindowsPath("a/b"))
