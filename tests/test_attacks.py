"""A hostile review of issue 8 ("Trust"), written as tests against memory and a real
redis-server: keys, type fidelity, signing, namespaces shared by two tenants, leases,
the breaker's pending invalidations, write-behind and the option table.

Each test states the attack; a defect that is not fixed yet is ``xfail(strict=True)`` with
the reason, so the day it is fixed the marker must go.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from decimal import Decimal
from typing import Any

import pytest
import redis
from conftest import unique_prefix

from cachekit import Cache, ConfigurationError, InvalidKeyError
from cachekit.leases.rules import is_tombstone
from cachekit.testing.servers import RedisServer
from cachekit.write.rules import item_key_builder

SECRET = "attack-secret"


@pytest.fixture
def raw(redis_server: RedisServer) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_server.url)
    yield client
    client.close()


@pytest.fixture
def rcache(redis_server: RedisServer) -> Iterator[Cache]:
    cache = Cache(redis_server.url, prefix=unique_prefix())
    yield cache
    cache.clear()
    cache.close()


@pytest.fixture(params=["memory", "redis"])
def both(request: pytest.FixtureRequest) -> Iterator[Cache]:
    if request.param == "memory":
        cache = Cache("memory://", prefix=unique_prefix())
    else:
        server = request.getfixturevalue("redis_server")
        cache = Cache(server.url, prefix=unique_prefix())
    yield cache
    cache.clear()
    cache.close()


def twice(func: Any, *args: Any) -> tuple[Any, Any]:
    return func(*args), func(*args)


# -- keys: templates -----------------------------------------------------------------------
def test_template_whose_literal_starts_with_percent_keeps_fields_apart(both: Cache) -> None:
    """``"{a}%{b}"``: the stop character is ``%`` itself, which used to be escaped twice,
    so ``("%", "")`` and ``("", "2525%")`` rendered the same key."""

    @both.cached(key="{a}%{b}")
    def pair(a: str, b: str) -> list[str]:
        return [a, b]

    assert pair("%", "") == ["%", ""]
    assert pair("", "2525%") == ["", "2525%"]
    assert pair.key("%", "") != pair.key("", "2525%")


def test_template_value_cannot_pose_as_another_calls_shortened_key(both: Cache) -> None:
    """A long template key is shortened to a head and the BLAKE2b of the whole key. The
    digest is public, so an argument made of the head, the mark and the digest rendered a
    short key equal to the shortened one, which was then taken as given: another
    argument's entry (a user-controlled path segment reading someone else's document)."""

    @both.cached(key="doc:{name}")
    def doc(name: str) -> int:
        return len(name)

    victim = "V" * 300
    assert doc(victim) == 300
    forged = doc.key(victim)[len("doc:") :]
    assert len(forged) < 200
    assert doc(forged) == len(forged)
    assert doc.key(forged) != doc.key(victim)
    # the shortened form a template gives is still what cache.get finds
    assert both.get(doc.key(victim)) == 300


def test_adjacent_template_fields_are_refused() -> None:
    cache = Cache("memory://")
    with pytest.raises(ConfigurationError):

        @cache.cached(key="{a}{b}")
        def f(a: str, b: str) -> str:
            return a + b


def test_template_escapes_the_stop_character_in_format_specs_and_attributes(
    both: Cache,
) -> None:
    @dataclasses.dataclass
    class User:
        name: str

    @both.cached(key="u:{user.name}:{n:>3}:{items[0]}")
    def f(user: User, n: int, items: list[str]) -> list[Any]:
        return [user.name, n, items[0]]

    assert f(User("a:b"), 1, ["c"]) == ["a:b", 1, "c"]
    assert f(User("a"), 1, ["b:c"]) == ["a", 1, "b:c"]
    assert f(User("a"), 1, [":b:c"]) == ["a", 1, ":b:c"]


# -- keys: odd argument types --------------------------------------------------------------
class AlwaysEqualInt(int):
    def __eq__(self, other: object) -> bool:
        return True

    def __hash__(self) -> int:
        return 0


class Folded(str):
    """A case-insensitive str: equal to its other-case spellings."""

    def __eq__(self, other: object) -> bool:
        return isinstance(other, str) and self.lower() == other.lower()

    def __hash__(self) -> int:
        return hash(self.lower())


def test_subclasses_with_their_own_equality_key_by_value_and_type(both: Cache) -> None:
    calls: list[Any] = []

    @both.cached()
    def echo(x: Any) -> str:
        calls.append(x)
        return f"{type(x).__name__}:{int.__repr__(x) if isinstance(x, int) else str(x)}"

    assert echo(AlwaysEqualInt(1)) == "AlwaysEqualInt:1"
    assert echo(AlwaysEqualInt(2)) == "AlwaysEqualInt:2"
    assert echo(1) == "int:1"
    assert echo(Folded("A")) == "Folded:A"
    assert echo(Folded("a")) == "Folded:a"
    assert echo("A") == "str:A"


def test_bool_and_int_dict_keys_and_set_members_stay_apart(both: Cache) -> None:
    @both.cached()
    def kinds(d: Any) -> list[str]:
        keys = d.keys() if isinstance(d, dict) else d
        return sorted(type(k).__name__ for k in keys)

    assert kinds({True: 1}) == ["bool"]
    assert kinds({1: 1}) == ["int"]
    assert kinds({1.0: 1}) == ["float"]
    assert kinds(frozenset({True})) == ["bool"]
    assert kinds(frozenset({1})) == ["int"]


def test_nfc_and_nfd_strings_are_different_keys(both: Cache) -> None:
    """Decided: no unicode normalisation. "é" precomposed and decomposed are different
    strings (len 1 and 2) a function may treat differently; folding them would return one
    call's result for the other."""

    @both.cached()
    def length(s: str) -> int:
        return len(s)

    assert length("\u00e9") == 1
    assert length("e\u0301") == 2


def test_lone_surrogates_in_default_keys(both: Cache) -> None:
    @both.cached()
    def length(s: str) -> int:
        return len(s)

    assert twice(length, "\ud800") == (1, 1)
    assert twice(length, "\udc00") == (1, 1)
    assert length('str("\\ud800")') == len('str("\\ud800")')


def test_cyclic_and_very_deep_arguments_raise_invalid_key(both: Cache) -> None:
    @both.cached()
    def f(x: Any) -> int:
        return 1

    cyclic: list[Any] = []
    cyclic.append(cyclic)
    with pytest.raises(InvalidKeyError):
        f(cyclic)
    deep: Any = []
    for _ in range(100_000):
        deep = [deep]
    with pytest.raises(InvalidKeyError):
        f(deep)
    assert f([[[1]]]) == 1  # and the cache still works


def test_cache_key_that_raises_or_returns_itself() -> None:
    cache = Cache("memory://")

    class Raises:
        def __cache_key__(self) -> str:
            raise RuntimeError("no key today")

    class Selfish:
        def __cache_key__(self) -> Any:
            return self

    @cache.cached()
    def f(x: Any) -> int:
        return 1

    with pytest.raises(RuntimeError, match="no key today"):
        f(Raises())
    with pytest.raises(InvalidKeyError):
        f(Selfish())


def test_huge_arguments_are_keyed_by_digest_and_stay_distinct(both: Cache) -> None:
    @both.cached()
    def size(x: Any) -> int:
        return len(x)

    a, b = "x" * 1_000_000, "x" * 999_999 + "y"
    assert size(a) == size(b) == 1_000_000
    assert size.key(a) != size.key(b)
    assert len(both._ns.key(size.key(a))) < 300
    assert twice(size, list(range(100_000))) == (100_000, 100_000)


def test_mutable_default_argument_is_keyed_by_its_current_value(both: Cache) -> None:
    @both.cached()
    def total(extra: int, seen: list[int] = []) -> int:  # noqa: B006 (the attack)
        seen.append(extra)
        return sum(seen)

    assert total(1) == 1
    assert total(1) == 2  # the default changed, so its key did: the function ran again
    assert total(2) == 4


def test_closures_of_one_factory_never_share_entries(both: Cache) -> None:
    """Default keys are module.qualname + arguments: two closures from one factory (same
    qualname, other captured values) used to share every entry. Refused at decoration
    (b76c488) or kept apart: never a value computed with the other closure's ``n``."""

    def multiplier(n: int) -> Any:
        @both.cached()
        def mul(x: int) -> int:
            return x * n

        return mul

    double = multiplier(2)
    assert double(5) == 10
    try:
        triple = multiplier(3)
    except ConfigurationError:
        return
    assert triple(5) == 15


# -- type fidelity -------------------------------------------------------------------------
@dataclasses.dataclass
class WithPrivateField:
    x: int
    _secret: int = 0


def test_dataclass_fields_starting_with_underscore_survive_a_hit(rcache: Cache) -> None:
    """orjson leaves out dataclass fields whose name starts with "_": the hit was rebuilt
    from the rest and got the field's default (``_secret=0`` for a miss's ``5``)."""

    @rcache.cached()
    def load(x: int) -> WithPrivateField:
        return WithPrivateField(x, _secret=5)

    assert twice(load, 1) == (WithPrivateField(1, 5), WithPrivateField(1, 5))

    @rcache.cached()
    def unannotated(x: int):  # type: ignore[no-untyped-def]
        return WithPrivateField(x, _secret=5)

    miss, hit = twice(unannotated, 1)
    assert miss == hit == {"x": 1, "_secret": 5}


@dataclasses.dataclass
class Priced:
    price: float

    def __post_init__(self) -> None:
        self.price = round(self.price * 1.2, 2)  # adds VAT: not idempotent


@pytest.mark.parametrize("options", [{}, {"lock": True}], ids=["plain", "lock"])
def test_post_init_is_not_run_again_on_a_hit(
    rcache: Cache, options: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    """A hit is rebuilt by msgspec.convert, which runs ``__post_init__`` (and pydantic
    validators) again: a non-idempotent one changed the value (12.0 became 14.4). Now a
    miss whose hit would differ is not stored (checked before storing, logged once)."""

    @rcache.cached(**options)
    def item(x: int) -> Priced:
        return Priced(10.0)

    with caplog.at_level(logging.WARNING, logger="cachekit"):
        assert [item(1).price for _ in range(3)] == [12.0, 12.0, 12.0]
    assert rcache.get(item.key(1)) is None
    assert caplog.text.count("not caching a result") == 1


@pytest.mark.parametrize("options", [{}, {"lock": True}], ids=["plain", "lock"])
def test_any_inside_an_annotated_tuple_keeps_nested_tuples(
    rcache: Cache, options: dict[str, Any]
) -> None:
    """An Any inside a decoded container is left as the serializer gives it: a nested tuple
    came back as a list. Such a value is not stored now (a value without one is)."""

    @rcache.cached(**options)
    def pairs(x: int) -> tuple[Any, ...]:
        return ((1, 2), (3, 4))

    miss, hit = twice(pairs, 1)
    assert miss == hit and type(hit[0]) is tuple

    @rcache.cached(**options)
    def flat(x: int) -> tuple[Any, ...]:
        return (1, "a", [2])

    assert twice(flat, 1) == ((1, "a", [2]), (1, "a", [2]))
    assert rcache.get(flat.key(1)) == [1, "a", [2]]  # faithful: stored


@pytest.mark.parametrize("options", [{}, {"lock": True}], ids=["plain", "lock"])
def test_lying_annotations_never_change_what_a_hit_returns(
    rcache: Cache, options: dict[str, Any]
) -> None:
    """A lying annotation was obeyed on the hit: -> datetime returning a str came back as a
    datetime, -> tuple returning a list as a tuple, -> set returning a frozenset as a set.
    With lock=True the stampede wrapper could not tell a hit from a computed value and
    decoded both: the miss was converted too."""

    @rcache.cached(**options)
    def when(x: int) -> datetime:
        return "2020-01-01T00:00:00"  # type: ignore[return-value]

    @rcache.cached(**options)
    def pair(x: int) -> tuple[int, int]:
        return [1, 2]  # type: ignore[return-value]

    @rcache.cached(**options)
    def members(x: int) -> set[int]:
        return frozenset({1})  # type: ignore[return-value]

    @rcache.cached(**options)
    def ratio(x: int) -> tuple[float, float]:
        return (1, 2)  # PEP 484: an int is a float; the equal float comes back, stored

    for func, kind in ((when, str), (pair, list), (members, frozenset)):
        miss, hit = twice(func, 1)
        assert type(miss) is type(hit) is kind
    assert twice(ratio, 1) == ((1, 2), (1.0, 2.0))


@pytest.mark.parametrize(
    ("annotation", "value"),
    [
        (int | str, "1"),
        (int | str, 1),
        (datetime | str, "2020-01-01T00:00:00"),
        (str, '{"!ck": ["b", "aGk="]}'),
        (str, '~{"!ck": ["b", "aGk="]}'),
        (str, "~"),
        (dict, {"!ck": ["b", "aGk="]}),
        (dict, {"a": {"!ck": ["dt", "2020-01-01T00:00:00"]}, "b": b"x"}),
        (dict[str, datetime], {"a": datetime(2020, 1, 1)}),
        (list[bool | int], [1, True]),
        (tuple[int | float, ...], (1, 1.0, 2**70)),
        (tuple[str, ...], ("2020-01-01", "aGk=")),
        (tuple[int, int] | str, "12"),
        (float, 1),
        (Any, {"k": [1, "1", None, 2.5]}),
        (None, None),
    ],
)
def test_honest_annotations_hit_equals_miss(rcache: Cache, annotation: Any, value: Any) -> None:
    def func(x: int) -> Any:
        return value

    func.__annotations__["return"] = annotation
    cached = rcache.cached()(func)
    miss, hit = twice(cached, 1)
    assert miss == hit and type(miss) is type(hit)
    assert repr(miss) == repr(hit)


# -- two tenants on one Redis --------------------------------------------------------------
@pytest.mark.parametrize(
    ("outer", "inner"),
    [
        ({"prefix": "app"}, {"prefix": "app:1"}),  # "app:1:" + "1:k" == "app:1:1:" + "k"
        ({"prefix": "app"}, {"prefix": "app", "version": "1:x"}),
        ({"prefix": "app", "version": 2}, {"prefix": "app:2"}),
        ({"prefix": "a%3A1"}, {"prefix": "a:1"}),  # the escaped spelling is not the other
    ],
)
def test_namespaces_of_two_tenants_never_overlap(
    redis_server: RedisServer, outer: dict[str, Any], inner: dict[str, Any]
) -> None:
    """``prefix:version:`` must be a prefix-free code: with a ':' in a prefix or a version,
    one namespace held another, so a tenant read the other's entries by key and its
    clear() deleted all of them."""
    tag = unique_prefix()
    a = Cache(redis_server.url, **{**outer, "prefix": tag + outer["prefix"]})
    b = Cache(redis_server.url, **{**inner, "prefix": tag + inner["prefix"]})
    try:
        b.set("k", "b's secret", tags=("t",))
        for key in ("1:k", "1:x:k", "x:k", "2:k", "1:1:k"):
            assert a.get(key) is None
        a.clear()
        a.invalidate_tags("t")
        assert b.get("k") == "b's secret"
        a.delete_pattern("*")
        assert b.get("k") == "b's secret"
    finally:
        a.clear()
        b.clear()
        a.close()
        b.close()


def test_tenants_with_different_prefixes_do_not_share_locks_tags_or_queues(
    redis_server: RedisServer,
) -> None:
    a = Cache(redis_server.url, prefix=unique_prefix())
    b = Cache(redis_server.url, prefix=unique_prefix())
    try:
        with a.lock("order", ttl=5), b.lock("order", ttl=5, timeout=0.5):  # not blocked
            pass
        a.set("x", 1, tags=("users",))
        b.set("x", 2, tags=("users",))
        b.invalidate_tags("users")
        assert a.get("x") == 1 and b.get("x") is None
        stored_a: list[dict[Any, Any]] = []
        stored_b: list[dict[Any, Any]] = []
        qa = a.write_behind(key="u:{}", store_many=stored_a.append, name="users")
        qb = b.write_behind(key="u:{}", store_many=stored_b.append, name="users")
        qa.set(1, "a")
        qb.set(1, "b")
        qa.flush(timeout=10)
        qb.flush(timeout=10)
        assert stored_a == [{1: "a"}] and stored_b == [{1: "b"}]
        qa.close()
        qb.close()
    finally:
        for cache in (a, b):
            cache.clear()
            cache.close()


def test_same_namespace_other_secret_cannot_forge_or_read(redis_server: RedisServer) -> None:
    """Two deployments sharing a prefix by mistake, with different secrets: each one's
    entries are misses to the other (never a value the other wrote)."""
    prefix = unique_prefix()
    alice = Cache(redis_server.url, prefix=prefix, secret="alice", serializer="pickle")
    mallory = Cache(redis_server.url, prefix=prefix, secret="mallory", serializer="pickle")
    unsigned = Cache(redis_server.url, prefix=prefix)
    try:
        alice.set("perm", {"admin": False})
        assert mallory.get("perm") is None
        mallory.set("perm", {"admin": True})
        assert alice.get("perm") is None
        unsigned.set("perm", {"admin": True})
        assert alice.get("perm") is None
        unsigned.set("n", 7)  # bare digits
        assert alice.get("n") is None
        mallory.incr("n")  # mallory's counter mark is not alice's
        assert alice.get("n") is None
    finally:
        alice.clear()
        alice.close()
        mallory.close()
        unsigned.close()


# -- signing -------------------------------------------------------------------------------
@pytest.fixture(params=["orjson", "pickle", "msgpack"])
def signed(request: pytest.FixtureRequest, redis_server: RedisServer) -> Iterator[Cache]:
    cache = Cache(redis_server.url, prefix=unique_prefix(), serializer=request.param, secret=SECRET)
    yield cache
    cache.clear()
    cache.close()


def test_signed_entry_moved_between_keys_namespaces_and_versions(
    signed: Cache, raw: redis.Redis, redis_server: RedisServer
) -> None:
    signed.set("perm:alice", {"admin": True})
    entry = raw.get(signed._ns.key("perm:alice"))
    assert entry is not None
    raw.set(signed._ns.key("perm:mallory"), entry)
    assert signed.get("perm:mallory") is None
    other_version = signed.with_options(version=2)
    raw.set(other_version._ns.key("perm:alice"), entry)
    assert other_version.get("perm:alice") is None
    other_prefix = Cache(
        redis_server.url,
        prefix=unique_prefix(),
        serializer=signed._options["serializer"],
        secret=SECRET,
    )
    raw.set(other_prefix._ns.key("perm:alice"), entry)
    assert other_prefix.get("perm:alice") is None
    other_prefix.close()
    for cut in (1, 2, 16, 33, len(entry) - 1):
        raw.set(signed._ns.key("perm:alice"), entry[:cut])
        assert signed.get("perm:alice") is None
    raw.set(signed._ns.key("perm:alice"), entry + b"x")
    assert signed.get("perm:alice") is None
    assert signed.stats()["corrupt"] >= 1


def test_signed_entry_of_another_value_type_under_the_same_key(signed: Cache) -> None:
    """A replay of an older signed entry of the same key is documented as possible; it
    must still be a value that was stored under that key, decoded as written."""
    signed.set("k", [1, 2])
    signed.set("k", "now a str")
    assert signed.get("k") == "now a str"


def test_counter_mark_does_not_outlive_the_counter(signed: Cache, raw: redis.Redis) -> None:
    signed.set("n", 5)
    signed.set("n", {"now": "a dict"})
    raw.set(signed._ns.key("n"), b"7")
    assert signed.get("n") is None


def test_unsigned_old_format_entries_are_refused_under_a_secret(
    redis_server: RedisServer, raw: redis.Redis
) -> None:
    prefix = unique_prefix()
    old = Cache(redis_server.url, prefix=prefix, serializer="orjson")
    new = Cache(redis_server.url, prefix=prefix, serializer="orjson", secret=SECRET)
    try:
        old.set("k", {"v": 1})
        old.set("bytes", b"\x01payload")
        assert new.get("k") is None and new.get("bytes") is None
        for forged in (b"\x01{}", b"\x41" + b"\0" * 32 + b"\x01{}", b"1", b"-0", b""):
            raw.set(new._ns.key("f"), forged)
            assert new.get("f") is None
    finally:
        old.clear()
        old.close()
        new.close()


# -- leases --------------------------------------------------------------------------------
def _load_racing(cache: Cache, invalidate: Any, **options: Any) -> tuple[Any, list[str]]:
    """A load that reads "old", then ``invalidate()`` runs (the source now says "new"),
    then the load finishes. Returns the cached function and the values it computed."""
    db = {"row": "old"}
    read, invalidated = threading.Event(), threading.Event()
    computed: list[str] = []

    @cache.cached(ttl=60, key="row", **options)
    def load() -> str:
        value = db["row"]
        if not computed:
            read.set()
            assert invalidated.wait(10)
        computed.append(value)
        return value

    worker = threading.Thread(target=load)
    worker.start()
    assert read.wait(10)
    db["row"] = "new"
    invalidate()
    invalidated.set()
    worker.join(10)
    return load, computed


@pytest.mark.parametrize("options", [{}, {"lock": True}], ids=["plain", "lock"])
def test_delete_many_during_a_load_wins(both: Cache, options: dict[str, Any]) -> None:
    load, computed = _load_racing(both, lambda: both.delete_many(["row", "other"]), **options)
    assert computed == ["old"]
    assert load() == "new"


@pytest.mark.parametrize("options", [{}, {"lock": True}], ids=["plain", "lock"])
@pytest.mark.parametrize("how", ["clear", "delete_pattern", "invalidate_all"])
def test_clear_during_a_load_wins(both: Cache, options: dict[str, Any], how: str) -> None:
    """clear() on Redis bumps the namespace generation (the load stores under the old one);
    in process, and for delete_pattern() in this process, loads that started before are
    refused their store."""

    def invalidate() -> None:
        if how == "clear":
            both.clear()
        elif how == "invalidate_all":
            both.invalidate_all()
        else:
            both.delete_pattern("r*")

    load, computed = _load_racing(both, invalidate, **options)
    assert computed == ["old"]
    assert load() == "new"


@pytest.mark.parametrize(
    "how",
    [
        "clear",
        "invalidate_all",
        pytest.param(
            "delete_pattern",
            marks=pytest.mark.xfail(
                strict=True,
                reason="delete_pattern() leaves no invalidation mark for another process: "
                "the key being loaded there does not exist yet, so no SCAN finds it to "
                "mark (a generation bump would drop every entry, not the pattern's): use "
                "invalidate_all() or clear() for bulk changes; its own process's loads "
                "are refused",
            ),
        ),
    ],
)
def test_a_bulk_delete_in_another_process_during_a_load_wins(
    redis_server: RedisServer, how: str
) -> None:
    """Two caches over one Redis are two processes: B's load reads the source, A updates
    it in bulk and clears (or deletes by pattern), B's load finishes."""
    prefix = unique_prefix()
    loader = Cache(redis_server.url, prefix=prefix, generation_poll=0)
    other = Cache(redis_server.url, prefix=prefix, generation_poll=0)

    def invalidate() -> None:
        if how == "clear":
            other.clear()
        elif how == "invalidate_all":
            other.invalidate_all()
        else:
            other.delete_pattern("r*")

    try:
        load, computed = _load_racing(loader, invalidate)
        assert computed == ["old"]
        assert load() == "new"
        assert other.get("row") == "new"
    finally:
        other.clear()
        loader.close()
        other.close()


@pytest.mark.parametrize("options", [{}, {"lock": True}], ids=["plain", "lock"])
def test_a_loader_that_raises_after_an_invalidation_wedges_nothing(
    both: Cache, options: dict[str, Any]
) -> None:
    read, invalidated = threading.Event(), threading.Event()
    outcomes: list[Any] = []

    @both.cached(ttl=60, key="boom", lock_timeout=5, **options)
    def load() -> str:
        if not outcomes:
            outcomes.append("first")
            read.set()
            assert invalidated.wait(10)
            raise RuntimeError("source down")
        return "ok"

    def first() -> None:
        try:
            load()
        except RuntimeError as exc:
            outcomes.append(exc)

    worker = threading.Thread(target=first)
    worker.start()
    assert read.wait(10)
    load.invalidate()
    invalidated.set()
    worker.join(10)
    assert isinstance(outcomes[-1], RuntimeError)
    started = time.monotonic()
    assert load() == "ok"
    assert time.monotonic() - started < 2  # the dead load's lock was released


_KILLED_HOLDER = """
import sys, time
from cachekit import Cache
cache = Cache(sys.argv[1], prefix=sys.argv[2])

@cache.cached(ttl=60, key="report", lock=True, lock_ttl=2)
def report():
    print("holding", flush=True)
    time.sleep(60)
    return "never"

report()
"""


def test_a_lock_holder_killed_mid_load_does_not_wedge_the_next_process(
    redis_server: RedisServer, tmp_path: Any
) -> None:
    """SIGKILL leaves the lock (and no wake-up for waiters): they wait at most lock_ttl,
    then compute themselves; nothing stored by the dead holder."""
    prefix = unique_prefix()
    script = tmp_path / "holder.py"
    script.write_text(_KILLED_HOLDER)
    holder = subprocess.Popen(
        [sys.executable, str(script), redis_server.url, prefix],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "holding"
        cache = Cache(redis_server.url, prefix=prefix)

        @cache.cached(ttl=60, key="report", lock=True, lock_ttl=2)
        def report() -> str:
            return "fresh"

        waiter_results: list[str] = []
        waiter = threading.Thread(target=lambda: waiter_results.append(report()))
        waiter.start()  # waits on the holder's lock (or finds it held after the kill)
        holder.send_signal(signal.SIGKILL)
        holder.wait(10)
        started = time.monotonic()
        waiter.join(10)
        assert waiter_results == ["fresh"]
        assert time.monotonic() - started < 3  # bounded by lock_ttl, not wedged
        assert report() == "fresh" and cache.get("report") == "fresh"
        cache.clear()
        cache.close()
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
        if holder.stdout is not None:
            holder.stdout.close()


# -- the breaker's pending invalidations ---------------------------------------------------
def test_close_during_an_outage_then_reuse_never_serves_an_undelivered_delete(
    private_redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A delete made while Redis was frozen is pending; close() (a framework's shutdown
    hook, a test fixture) used to drop it and close the circuit, so the cache used again
    read the deleted value from the recovered Redis for its whole TTL."""
    cache = Cache(private_redis.url, prefix=unique_prefix(), timeout=0.2, retry_interval=60)
    cache.set("k", "old")
    private_redis.freeze()
    try:
        assert cache.get("other") is None  # trips the breaker
        assert cache._breaker.open
        cache.delete("k")  # never sent: pending
        assert cache._breaker.pending == 1
    finally:
        private_redis.thaw()
    with caplog.at_level(logging.WARNING, logger="cachekit"):
        cache.close()
    assert "never delivered" in caplog.text
    cache._breaker._retry_interval = 0.01  # the reused cache's probe: soon
    assert cache.get("k") is None  # reused: the pending delete still wins
    deadline = time.monotonic() + 10
    while cache._breaker.open and time.monotonic() < deadline:
        cache._breaker._stop.wait(0.01)
    assert not cache._breaker.open
    assert cache.get("k") is None
    raw = redis.Redis.from_url(private_redis.url).get(cache._ns.key("k"))
    assert raw is None or is_tombstone(raw)  # no entry (a tombstone is an invalidation)
    cache.close()


_EXIT_MID_OUTAGE = """
import sys, logging
logging.basicConfig(level=logging.WARNING)
from cachekit import Cache
from cachekit.testing.servers import RedisServer
from cachekit.write.rules import item_key_builder
cache = Cache(sys.argv[1], prefix=sys.argv[2], timeout=0.2, retry_interval=60)
cache.set("k", "old")
print("ready", flush=True)
sys.stdin.readline()              # the parent froze Redis
cache.get("other")                # trips the breaker
cache.delete("k")                 # pending
cache.delete("k2")
"""


def test_exit_mid_outage_says_which_invalidations_are_lost(
    private_redis: RedisServer, tmp_path: Any
) -> None:
    """Documented: a process that exits mid-outage loses its pending invalidations and
    says so. The warning must come at interpreter exit without an explicit close()."""
    script = tmp_path / "exit.py"
    script.write_text(_EXIT_MID_OUTAGE)
    child = subprocess.Popen(
        [sys.executable, str(script), private_redis.url, unique_prefix()],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        private_redis.freeze()
        _, err = child.communicate("go\n", timeout=30)
    finally:
        private_redis.thaw()
        if child.poll() is None:
            child.kill()
            child.communicate()
    assert child.returncode == 0
    assert "exiting with invalidations never delivered (2 keys" in err


# -- write-behind --------------------------------------------------------------------------
EQUAL_IDS = ((1, 1.0, True), (("a", 1), ("a", 1.0), ("a", True)))


@pytest.mark.parametrize("ids", EQUAL_IDS, ids=["numbers", "in-tuples"])
def test_write_behind_ids_that_compare_equal(both: Cache, ids: tuple[Any, ...]) -> None:
    """Ids equal in Python but of different types (1, 1.0, True) were coalesced into one
    store_many write (a dict cannot hold them apart) while the cache kept three entries
    (u:1, u:1.0, u:True): the cache then served values the source did not hold. Now an id
    whose numbers are of other types than the first use is refused: a clear error, and
    nothing queued, stored or cached for it."""
    source: dict[Any, str] = {}
    queue = both.write_behind(key="u:{}", store_many=source.update, name=unique_prefix())
    first, *others = ids
    try:
        queue.set(first, "first")
        for other in others:
            with pytest.raises(InvalidKeyError, match="other types"):
                queue.set(other, "other")
            with pytest.raises(InvalidKeyError):
                queue.get(other)
        queue.flush(timeout=10)
        assert source == {first: "first"} and type(next(iter(source))) is type(first)
        assert queue.get(first) == source[first]
        assert queue.pending == 0 and queue.dead_letters() == []
        key_of = item_key_builder("u:{}")
        assert both.get(key_of(first)) == "first"
        for other in others:  # nothing cached under the refused ids' keys
            assert key_of(other) != key_of(first) and both.get(key_of(other)) is None
    finally:
        queue.close()


@pytest.mark.parametrize("ids", EQUAL_IDS, ids=["numbers", "in-tuples"])
async def test_write_behind_ids_that_compare_equal_async(both: Cache, ids: tuple[Any, ...]) -> None:
    source: dict[Any, str] = {}
    queue = both.write_behind(key="u:{}", store_many=source.update, name=unique_prefix())
    first, *others = ids
    try:
        await queue.aset(first, "first")
        for other in others:
            with pytest.raises(InvalidKeyError, match="other types"):
                await queue.aset(other, "other")
            with pytest.raises(InvalidKeyError):
                await queue.aget(other)
        await queue.aflush(timeout=10)
        assert source == {first: "first"} and type(next(iter(source))) is type(first)
        assert await queue.aget(first) == "first"
        assert queue.pending == 0 and await queue.adead_letters() == []
    finally:
        await queue.aclose()


def test_write_behind_ids_of_one_type_and_unrelated_types_are_accepted(both: Cache) -> None:
    """The rule refuses only what could collide: a str id beside int ids, tuples of other
    shapes, and -0.0 (one id with 0.0: one entry, one write) are fine."""
    source: dict[Any, str] = {}
    queue = both.write_behind(key="u:{}", store_many=source.update, name=unique_prefix())
    try:
        for item_id in (1, 2, "1", ("a", 1), (1, "a"), ("a", "b")):
            queue.set(item_id, repr(item_id))
        floats = both.write_behind(key="f:{}", store_many=source.update, name=unique_prefix())
        floats.set(0.0, "zero")
        floats.set(-0.0, "minus zero")
        assert floats.key(-0.0) == floats.key(0.0)
        queue.flush(timeout=10)
        floats.flush(timeout=10)
        floats.close()
        assert source == {
            1: "1", 2: "2", "1": "'1'", ("a", 1): "('a', 1)", (1, "a"): "(1, 'a')",
            ("a", "b"): "('a', 'b')", 0.0: "minus zero",
        }  # fmt: skip
        assert floats.get(0.0) == floats.get(-0.0) == "minus zero"
    finally:
        queue.close()


@pytest.mark.parametrize("nan", [float("nan"), Decimal("NaN"), Decimal("sNaN")], ids=repr)
def test_a_nan_item_id_is_refused(both: Cache, nan: Any) -> None:
    """A NaN equals no id, itself included: its write could never be found again (and a
    signalling NaN cannot even be compared or hashed)."""
    queue = both.write_behind(key="u:{}", store_many=lambda items: None, name=unique_prefix())
    through = both.write_through(key="w:{}", load=None, store=lambda item_id, value: None)
    try:
        with pytest.raises(InvalidKeyError, match="NaN"):
            queue.set(nan, "v")
        with pytest.raises(InvalidKeyError, match="NaN"):
            through.set(nan, "v")
        assert queue.pending == 0
    finally:
        queue.close()


def test_replaying_dead_letters_whose_ids_are_refused_keeps_them(
    redis_server: RedisServer,
) -> None:
    """Another process dead-lettered writes of float ids; this one uses ints: replay()
    took the letters out of the dead letters and then raised on the first id, losing the
    rest. Now it raises before taking any."""
    name, prefix = unique_prefix(), unique_prefix()
    failing = Cache(redis_server.url, prefix=prefix)

    def refuse(items: dict[Any, str]) -> None:
        raise ValueError("constraint violated")

    elsewhere = failing.write_behind(
        key="u:{}", store_many=refuse, name=name, max_retries=0, retry_backoff=0.001
    )
    here_cache = Cache(redis_server.url, prefix=prefix)
    here = here_cache.write_behind(key="u:{}", store_many=lambda items: None, name=name)
    try:
        elsewhere.set(1.0, "float")
        elsewhere.flush(timeout=10)
        elsewhere.close()
        assert [list(letter.items) for letter in here.dead_letters()] == [[1.0]]
        here.set(2, "int")  # this process's ids are ints
        with pytest.raises(InvalidKeyError, match="other types"):
            here.replay()
        assert [list(letter.items) for letter in here.dead_letters()] == [[1.0]]  # kept
    finally:
        here.close()
        for cache in (failing, here_cache):
            cache.clear()
            cache.close()


def test_write_through_ids_that_compare_equal(both: Cache) -> None:
    """The same defect in write-through: store(1.0, ...) wrote the source's row 1 while the
    cache kept u:1 with the older value. Refused the same way, before the source is
    written."""
    source: dict[Any, str] = {}
    users = both.write_through(key="u:{}", load=source.get, store=source.__setitem__)
    users.set(1, "int")
    for other in (1.0, True):
        with pytest.raises(InvalidKeyError, match="other types"):
            users.set(other, "other")
        with pytest.raises(InvalidKeyError):
            users.get(other)
        with pytest.raises(InvalidKeyError):
            users.delete(other)
    assert source == {1: "int"} and users.get(1) == "int"


async def test_write_through_ids_that_compare_equal_async(both: Cache) -> None:
    source: dict[Any, str] = {}
    users = both.write_through(key="u:{}", load=source.get, store=source.__setitem__)
    await users.aset(1, "int")
    with pytest.raises(InvalidKeyError, match="other types"):
        await users.aset(1.0, "float")
    assert source == {1: "int"} and await users.aget(1) == "int"


def test_write_behind_one_id_refused_forever_is_dead_lettered_alone(both: Cache) -> None:
    source: dict[Any, str] = {}

    def store_many(items: dict[Any, str]) -> None:
        if ("poison", 1) in items:
            raise ValueError("constraint violated")
        source.update(items)

    queue = both.write_behind(
        key="u:{}",
        store_many=store_many,
        name=unique_prefix(),
        max_retries=1,
        retry_backoff=0.001,
        batch_size=50,
    )
    try:
        for index in range(20):
            queue.set(("ok", index), "v")
        queue.set(("poison", 1), "bad")
        queue.flush(timeout=20)
        assert len(source) == 20 and ("poison", 1) not in source
        assert [list(letter.items) for letter in queue.dead_letters()] == [[("poison", 1)]]
    finally:
        queue.close()


def test_a_journal_taken_by_a_dead_process_with_our_pid_is_taken_again(tmp_path: Any) -> None:
    """In a container the program is pid 1 at every start: a file the previous start took
    (then died) is named with our pid, and was skipped as "ours" forever."""
    from cachekit.write.journal import JournalFiles

    files = JournalFiles(tmp_path, "queue")
    for taker in (f"{os.getpid()}", f"{os.getpid()}-0123456789ab"):  # older and newer names
        path = files.write([("record", taker)])
        path.rename(path.with_name(f"{path.name}.taken-{taker}"))
    taken = files.take()
    assert sorted(content["records"][0][1] for _, content in taken) == sorted(
        [f"{os.getpid()}", f"{os.getpid()}-0123456789ab"]
    )
    assert files.take() == []  # now this process holds them: not taken twice
    for path, _ in taken:
        files.forget(path)
    assert list(tmp_path.iterdir()) == []


_TAKER = """
import sys
from cachekit.write.journal import JournalFiles
files = JournalFiles(sys.argv[1], "queue")
print("ready", flush=True)
sys.stdin.readline()
print(",".join(str(content["records"][0]) for _, content in files.take()), flush=True)
"""


def test_two_processes_replaying_one_journal_take_each_file_once(tmp_path: Any) -> None:
    from cachekit.write.journal import JournalFiles

    files = JournalFiles(tmp_path / "journal", "queue")
    for index in range(200):
        files.write([index])
    script = tmp_path / "taker.py"
    script.write_text(_TAKER)
    takers = [
        subprocess.Popen(
            [sys.executable, str(script), str(tmp_path / "journal")],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    for taker in takers:
        assert taker.stdout is not None and taker.stdout.readline().strip() == "ready"
    for taker in takers:  # both start taking at about the same time
        assert taker.stdin is not None
        taker.stdin.write("go\n")
        taker.stdin.flush()
    seen: list[int] = []
    for taker in takers:
        out, _ = taker.communicate(timeout=60)
        seen += [int(part) for part in out.strip().split(",") if part]
    assert sorted(seen) == list(range(200))  # every file once: none lost, none twice


_KILLED_MID_BATCH = """
import sys, time
from cachekit import Cache
cache = Cache(sys.argv[1], prefix=sys.argv[2])

def store_many(items):
    print("storing", len(items), flush=True)
    time.sleep(60)

queue = cache.write_behind(key="u:{}", store_many=store_many, name="users", claim_after=0.5,
                           flush_interval=0.01)
for index in range(5):
    queue.set(index, f"v{index}")
print("queued", flush=True)
time.sleep(60)
"""


def test_write_behind_killed_mid_batch_is_stored_by_the_next_process(
    redis_server: RedisServer, tmp_path: Any
) -> None:
    """SIGKILL while store_many runs: the batch was delivered but never acknowledged; the
    next process claims it (after claim_after) and stores every write."""
    prefix = unique_prefix()
    script = tmp_path / "producer.py"
    script.write_text(_KILLED_MID_BATCH)
    producer = subprocess.Popen(
        [sys.executable, str(script), redis_server.url, prefix],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert producer.stdout is not None
        # the kill comes once all 5 writes are queued and a batch is in store_many (a
        # batch may start before the last set(): the order of the two lines is free)
        said = {producer.stdout.readline().split()[0] for _ in range(2)}
        assert said == {"storing", "queued"}, said
        producer.send_signal(signal.SIGKILL)
        producer.wait(10)
    finally:
        if producer.poll() is None:
            producer.kill()
            producer.wait()
        if producer.stdout is not None:
            producer.stdout.close()
    cache = Cache(redis_server.url, prefix=prefix)
    source: dict[Any, str] = {}
    queue = cache.write_behind(
        key="u:{}", store_many=source.update, name="users", claim_after=0.5, flush_interval=0.01
    )
    try:
        deadline = time.monotonic() + 20
        while len(source) < 5 and time.monotonic() < deadline:
            queue.flush(timeout=5)
            threading.Event().wait(0.05)
        assert source == {index: f"v{index}" for index in range(5)}
    finally:
        queue.close()
        cache.clear()
        cache.close()


# -- the option table ----------------------------------------------------------------------
ODD_STRINGS = ["", "none", "None", "1e309", "-1e309", "-0", " 1 ", "nan", "inf", "-1", "0x10"]


@pytest.mark.parametrize("value", ODD_STRINGS)
def test_every_option_from_url_and_env_is_a_value_or_a_configuration_error(
    value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from urllib.parse import urlencode

    from cachekit._config import OPTIONS

    for name in OPTIONS:
        if name == "secret":  # refused in URLs by design (they get logged)
            continue
        results = []
        url = "memory://?" + urlencode({name: value})
        for make in (functools.partial(Cache, url), Cache.from_env):
            monkeypatch.setenv("CACHEKIT_URL", "memory://")
            monkeypatch.setenv("CACHEKIT_" + name.upper(), value)
            try:
                cache = make()
            except ConfigurationError:
                results.append("refused")
            else:
                results.append(repr(cache._options[name]))
                cache.close()
            finally:
                monkeypatch.delenv("CACHEKIT_" + name.upper())
        if value:  # an empty variable is an unset one; an empty query value is not
            assert results[0] == results[1], (name, value, results)


@pytest.mark.parametrize("value", [0, -1, 0.0, "0", "-0", "-1e309"])
def test_a_default_ttl_that_would_store_nothing_is_refused(value: Any) -> None:
    """default_ttl=0 (what "never expire" means in Flask-Caching and memcached) made every
    store a delete: a cache silently off."""
    with pytest.raises(ConfigurationError, match="default_ttl"):
        Cache(default_ttl=value) if not isinstance(value, str) else Cache(
            "memory://?default_ttl=" + value
        )
    assert Cache(default_ttl=None).default_ttl is None
    assert Cache(default_ttl=float("inf")).default_ttl is None


# -- tags ----------------------------------------------------------------------------------
def test_clear_after_a_tag_invalidation(redis_server: RedisServer, raw: redis.Redis) -> None:
    """A tag invalidation leaves a mark beside the tag's set (``...{tag}:inv``, a string);
    clear() scanned the tag keys and ran the set script on the mark: WRONGTYPE, so the
    remaining tag sets were left behind, and with on_error="raise" clear() raised."""
    cache = Cache(redis_server.url, prefix=unique_prefix(), on_error="raise")
    try:
        cache.set("a", 1, tags=("users",))
        cache.invalidate_tags("users")
        for index in range(5):
            cache.set(f"k{index}", index, tags=(f"t{index}",))
        assert cache.clear() >= 5
        assert all(cache.get(f"k{index}") is None for index in range(5))
        left = [key for key in raw.scan_iter(match=f"#{cache._ns.text}tag:*") if b":inv" not in key]
        assert left == []
        assert cache.stats()["errors"] == 0
    finally:
        cache.close()


def test_tag_names_are_not_patterns(both: Cache) -> None:
    both.set("t", 1, tags=("a",))
    both.set("u", 2, tags=("a:b",))
    both.set("v", 3, tags=("a*",))
    both.set("w", 4, tags=("}:inv",))
    both.invalidate_tags("*")
    assert [both.get(key) for key in "tuvw"] == [1, 2, 3, 4]
    both.invalidate_tags("a")
    assert [both.get(key) for key in "tuvw"] == [None, 2, 3, 4]
    both.invalidate_tags("a*")
    assert [both.get(key) for key in "tuvw"] == [None, 2, None, 4]


def test_a_pydantic_validator_that_is_not_idempotent_is_not_cached(rcache: Cache) -> None:
    pydantic = pytest.importorskip("pydantic")

    class Account(pydantic.BaseModel):  # type: ignore[name-defined,misc]
        name: str

        @pydantic.field_validator("name")  # type: ignore[misc]
        @classmethod
        def mark(cls, value: str) -> str:
            return value + "!"

    @rcache.cached()
    def account(x: int) -> Account:
        return Account(name="ann")

    assert [account(1).name for _ in range(3)] == ["ann!"] * 3
    assert rcache.get(account.key(1)) is None


# -- locks ---------------------------------------------------------------------------------
@pytest.mark.parametrize("ttl", [float("nan"), float("inf"), 0, -1, True, 1e-9, "5"])
def test_a_lock_ttl_that_cannot_expire_properly_is_refused(both: Cache, ttl: Any) -> None:
    """NaN, inf and 1e-9 s took a lock on memory (never or at once expiring) and failed on
    Redis as a BackendError; True was a 1 s lock."""
    from cachekit import InvalidArgumentError

    with pytest.raises(InvalidArgumentError):
        both.lock("x", ttl=ttl)
    with pytest.raises(ConfigurationError):

        @both.cached(lock=True, lock_ttl=ttl)
        def f() -> int:
            return 1

    with both.lock("x", ttl=0.001 + 1):
        pass
