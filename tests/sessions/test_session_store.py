"""The core session store on memory and a real redis-server: ids, fixation, timeouts,
regenerate, logout, merging of concurrent saves, no resurrection."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cachekit import BackendError, Cache, ConfigurationError, InvalidArgumentError
from cachekit.sessions import AsyncSessionStore, Session, SessionStore, is_session_id
from cachekit.testing.servers import RedisServer
from tests.conftest import unique_prefix

# JSON values (orjson: 64-bit integers, finite floats, text without lone surrogates)
_TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=10)
JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | _TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_TEXT, inner, max_size=4),
    max_leaves=10,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["memory", "redis"])
def cache(request: pytest.FixtureRequest) -> Iterator[Cache]:
    if request.param == "memory":
        made = Cache("memory://", prefix=unique_prefix())
    else:
        server: RedisServer = request.getfixturevalue("redis_server")
        made = Cache(server.url, prefix=unique_prefix())
    yield made
    made.close()


@pytest.fixture
def clock() -> Clock:
    return Clock()


def store_of(cache: Cache, clock: Clock, **options: Any) -> SessionStore:
    options.setdefault("idle_timeout", 100)
    options.setdefault("absolute_timeout", 1000)
    options.setdefault("touch_after", 0)
    return SessionStore(cache, clock=clock, **options)


def new_session(store: SessionStore, **values: Any) -> str:
    session = store.load(None)
    session.update(values)
    outcome = store.save(session)
    assert outcome.set_id is not None and is_session_id(outcome.set_id)
    return outcome.set_id


def test_round_trip_and_only_changes_are_written(cache: Cache, clock: Clock) -> None:
    store = store_of(cache, clock)
    sid = new_session(store, user=1, cart=[1, 2])
    session = store.load(sid)
    assert dict(session) == {"user": 1, "cart": [1, 2]} and session.id == sid
    assert store.save(session).written is False  # unchanged: no write
    session["cart"].append(3)  # a nested change is found (JSON compared)
    assert store.save(session).written is True
    assert store.load(sid)["cart"] == [1, 2, 3]


def test_ids_are_256_bit_and_unique(cache: Cache, clock: Clock) -> None:
    store = store_of(cache, clock)
    ids = {new_session(store, n=i) for i in range(50)}
    assert len(ids) == 50 and all(len(i) == 43 for i in ids)


def test_unknown_id_is_never_adopted(cache: Cache, clock: Clock) -> None:
    store = store_of(cache, clock)
    forged = "A" * 43
    session = store.load(forged)
    assert session.is_new and dict(session) == {}
    assert store.save(session).clear_cookie  # nothing stored: the cookie goes
    session = store.load(forged)
    session["user"] = "victim"
    outcome = store.save(session)
    assert outcome.set_id not in (None, forged)
    assert store.load(forged).is_new  # the attacker's id holds nothing


@pytest.mark.parametrize("cookie", ["", "x", "../" * 20, "A" * 44, "é" * 43, "A" * 42 + "\x00"])
def test_garbage_ids_give_a_new_session(cache: Cache, clock: Clock, cookie: str) -> None:
    store = store_of(cache, clock)
    session = store.load(cookie)
    assert session.is_new and dict(session) == {}


def test_tampered_id_of_a_real_session(cache: Cache, clock: Clock) -> None:
    store = store_of(cache, clock)
    sid = new_session(store, user=1)
    flipped = ("B" if sid[0] != "B" else "C") + sid[1:]
    assert store.load(flipped).is_new
    assert store.load(sid)["user"] == 1


def test_idle_timeout(cache: Cache, clock: Clock) -> None:
    store = store_of(cache, clock)
    sid = new_session(store, user=1)
    clock.now += 99
    assert store.load(sid)["user"] == 1  # a read keeps it alive (touch_after=0)
    clock.now += 99
    assert store.load(sid)["user"] == 1
    clock.now += 100
    assert store.load(sid).is_new


def test_touch_after_skips_the_write_and_expires_early_not_late(cache: Cache, clock: Clock) -> None:
    store = store_of(cache, clock, touch_after=50)
    sid = new_session(store, user=1)
    clock.now += 40
    assert not store.load(sid).is_new  # within touch_after: not refreshed
    clock.now += 61  # 101 s since the last refresh
    assert store.load(sid).is_new


def test_absolute_timeout_even_when_active(cache: Cache, clock: Clock) -> None:
    store = store_of(cache, clock)
    sid = new_session(store, n=0)
    for i in range(1, 10):
        clock.now += 99
        session = store.load(sid)
        assert session["n"] == i - 1
        session["n"] = i
        assert store.save(session).written
    clock.now += 200  # 1091 s since creation
    assert store.load(sid).is_new


def test_backend_ttl_is_the_smaller_remaining(cache: Cache, clock: Clock) -> None:
    store = store_of(cache, clock, idle_timeout=100, absolute_timeout=150)
    sid = new_session(store, a=1)
    ttl = cache._backend.ttl(store.key(sid))
    assert 99 < ttl <= 100
    clock.now += 90
    store.load(sid)  # touched: min(100 idle, 60 left of the absolute)
    ttl = cache._backend.ttl(store.key(sid))
    assert 59 < ttl <= 60


def test_regenerate_moves_data_and_kills_the_old_id(cache: Cache, clock: Clock) -> None:
    store = store_of(cache, clock)
    old = new_session(store, cart=[1])
    session = store.load(old)
    session["user"] = 7
    session.regenerate()
    outcome = store.save(session)
    assert outcome.set_id not in (None, old)
    assert dict(store.load(outcome.set_id)) == {"cart": [1], "user": 7}
    assert store.load(old).is_new  # dead at once
    stale = store.load(old)
    stale["x"] = 1
    assert store.save(stale).set_id not in (old, outcome.set_id)


def test_regenerate_keeps_the_creation_time(cache: Cache, clock: Clock) -> None:
    store = store_of(cache, clock)
    sid = new_session(store, a=1)
    for _ in range(10):  # active every 90 s: the idle timeout never ends it
        clock.now += 90
        session = store.load(sid)
        assert not session.is_new
        session.regenerate()  # a new id each time: it cannot extend the session
        new = store.save(session).set_id
        assert new is not None
        sid = new
    clock.now += 90  # 990 s since the first creation: still alive
    assert not store.load(sid).is_new
    clock.now += 20  # 1010 s: past the absolute timeout, though active and regenerated
    assert store.load(sid).is_new


def test_regenerate_grace_is_read_only(cache: Cache, clock: Clock) -> None:
    store = store_of(cache, clock, regenerate_grace=30)
    old = new_session(store, a=1)
    session = store.load(old)
    session.regenerate()
    new = store.save(session).set_id
    in_flight = store.load(old)
    assert in_flight["a"] == 1 and in_flight.read_only
    in_flight["a"] = 2
    assert store.save(in_flight).written is False
    assert store.load(new)["a"] == 1
    if not cache.shared:
        return
    assert cache._backend.ttl(store.key(old)) <= 30


def test_clear_deletes_server_side(cache: Cache, clock: Clock) -> None:
    store = store_of(cache, clock)
    sid = new_session(store, user=1)
    session = store.load(sid)
    session.clear()
    assert store.save(session).clear_cookie
    assert cache._backend.exists(store.key(sid)) is False
    assert store.load(sid).is_new


def test_clear_then_store_starts_a_new_session(cache: Cache, clock: Clock) -> None:
    store = store_of(cache, clock)
    sid = new_session(store, user=1)
    session = store.load(sid)
    session.clear()
    session["flash"] = "bye"
    new = store.save(session).set_id
    assert new not in (None, sid) and dict(store.load(new)) == {"flash": "bye"}
    assert store.load(sid).is_new


def test_removing_every_key_deletes_the_session(cache: Cache, clock: Clock) -> None:
    store = store_of(cache, clock)
    sid = new_session(store, user=1)
    session = store.load(sid)
    del session["user"]
    assert store.save(session).clear_cookie
    assert store.load(sid).is_new


def test_concurrent_saves_merge_by_field(cache: Cache, clock: Clock) -> None:
    store = store_of(cache, clock)
    sid = new_session(store, seed=0)
    sessions = [store.load(sid) for _ in range(2)]  # both loaded before either saves
    sessions[0]["a"] = 1
    del sessions[1]["seed"]
    sessions[1]["b"] = 2
    for s in sessions:
        assert store.save(s).written
    assert dict(store.load(sid)) == {"a": 1, "b": 2}


def test_threads_lose_no_update(cache: Cache, clock: Clock) -> None:
    store = store_of(cache, clock)
    sid = new_session(store, seed=0)
    start = threading.Barrier(8)

    def worker(n: int) -> None:
        start.wait()
        for i in range(25):
            session = store.load(sid)
            session[f"k{n}-{i}"] = i
            assert store.save(session).written

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(store.load(sid)) == 1 + 8 * 25


def test_saves_after_logout_resurrect_nothing(cache: Cache, clock: Clock) -> None:
    store = store_of(cache, clock)
    sid = new_session(store, user=1)
    in_flight = [store.load(sid) for _ in range(50)]
    logout = store.load(sid)
    logout.clear()
    store.save(logout)
    for n, session in enumerate(in_flight):
        session[f"late{n}"] = n
        outcome = store.save(session)
        assert outcome.lost and not outcome.written and outcome.set_id is None
    assert store.load(sid).is_new
    assert cache._backend.exists(store.key(sid)) is False


def test_values_must_be_json(cache: Cache, clock: Clock) -> None:
    store = store_of(cache, clock)
    session = store.load(None)
    with pytest.raises(InvalidArgumentError):
        session["when"] = object()
    session["ok"] = {"nested": [1, "two", None, 3.5, True]}
    sid = store.save(session).set_id
    assert store.load(sid)["ok"] == {"nested": [1, "two", None, 3.5, True]}


def test_two_caches_do_not_share_sessions(cache: Cache, clock: Clock) -> None:
    store = store_of(cache, clock)
    sid = new_session(store, user=1)
    other = cache.with_options(prefix=unique_prefix())
    assert store_of(other, clock).load(sid).is_new


def test_options_are_checked(cache: Cache) -> None:
    with pytest.raises(ConfigurationError):
        SessionStore(cache, idle_timeout=0)
    with pytest.raises(ConfigurationError):
        SessionStore(cache, absolute_timeout=-1)
    with pytest.raises(ConfigurationError):
        SessionStore(cache, regenerate_grace=-1)


def test_session_is_a_dict() -> None:
    session = Session()
    session["a"] = 1
    assert isinstance(session, dict) and session == {"a": 1} and session.is_new


def test_async_store(cache: Cache, clock: Clock) -> None:
    store = AsyncSessionStore(cache, idle_timeout=100, absolute_timeout=1000, clock=clock)

    async def main() -> None:
        first = await store.load(None)
        first["a"] = 1
        sid = (await store.save(first)).set_id
        assert sid is not None

        async def write(n: int) -> None:
            session = await store.load(sid)
            session[f"k{n}"] = n
            assert (await store.save(session)).written

        await asyncio.gather(*(write(n) for n in range(100)))
        assert len(await store.load(sid)) == 101
        assert await store.exists(sid)
        assert await store.delete(sid)
        assert not await store.exists(sid)

    asyncio.run(main())


def test_redis_down_gives_an_unsaved_empty_session(private_redis: RedisServer) -> None:
    cache = Cache(private_redis.url, prefix=unique_prefix(), timeout=0.5)
    store = SessionStore(cache)
    sid = new_session(store, user=1)
    private_redis.stop()
    session = store.load(sid)
    assert dict(session) == {} and session.unavailable
    session["x"] = 1
    outcome = store.save(session)
    assert not outcome.written and not outcome.clear_cookie and outcome.set_id is None
    cache.close()
    raising = Cache(private_redis.url, prefix=unique_prefix(), timeout=0.5, on_error="raise")
    with pytest.raises(BackendError):
        SessionStore(raising).load(sid)
    raising.close()


def test_saving_twice_writes_only_later_changes(cache: Cache, clock: Clock) -> None:
    store = store_of(cache, clock)
    session = store.load(None)
    session["a"] = 1
    sid = store.save(session).set_id
    assert session.id == sid and not session.is_new
    assert store.save(session).written is False
    session["b"] = 2
    assert store.save(session).written and store.load(sid) == {"a": 1, "b": 2}
    session.regenerate()
    new = store.save(session).set_id
    assert session.id == new != sid and store.load(new) == {"a": 1, "b": 2}
    session.clear()
    assert store.save(session).clear_cookie and session.is_new and store.load(new).is_new


def test_many_fields_and_odd_names(cache: Cache, clock: Clock) -> None:
    store = store_of(cache, clock)
    session = store.load(None)
    names = ["#c", "#l", "#g", "=x", "", "é", "a b", "\x00"] + [f"k{n}" for n in range(3000)]
    for n, name in enumerate(names):
        session[name] = n
    sid = store.save(session).set_id
    loaded = store.load(sid)
    assert dict(loaded) == {name: n for n, name in enumerate(names)}
    for name in names[:1500]:
        del loaded[name]
    loaded["new"] = True
    assert store.save(loaded).written
    assert dict(store.load(sid)) == {
        "new": True,
        **{n: i for i, n in enumerate(names) if i >= 1500},
    }
    with pytest.raises(InvalidArgumentError):
        session["\ud800"] = 1
    with pytest.raises(InvalidArgumentError):
        session[1] = 1  # type: ignore[index]
    with pytest.raises(InvalidArgumentError):
        session["s"] = "\ud800"


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(values=st.dictionaries(_TEXT, JSON, max_size=6))
def test_values_round_trip_exactly(cache: Cache, clock: Clock, values: dict[str, Any]) -> None:
    store = store_of(cache, clock)
    session = store.load(None)
    session.update(values)
    outcome = store.save(session)
    if not values:
        assert outcome.set_id is None
        return
    assert dict(store.load(outcome.set_id)) == values


def test_round_trips_per_request(private_redis: RedisServer, clock: Clock) -> None:
    import redis

    admin = redis.Redis(host="127.0.0.1", port=private_redis.port)
    cache = Cache(private_redis.url, prefix=unique_prefix())
    store = SessionStore(cache, clock=clock, idle_timeout=100, absolute_timeout=1000)

    def calls() -> dict[str, int]:
        stats = admin.info("commandstats")
        return {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in stats.items()}

    def sent(action: Any) -> dict[str, int]:
        before = calls()
        action()
        after = calls()
        ours = {k: after[k] - before.get(k, 0) for k in after if not k.startswith("info")}
        return {k: v for k, v in ours.items() if v}

    sid = new_session(store, a=1)
    session = store.load(sid)
    assert sent(lambda: store.load(None)) == {}  # no cookie: nothing asked
    assert sent(lambda: store.load("x")) == {}  # malformed: nothing asked
    assert sent(lambda: store.save(session)) == {}  # unchanged: nothing written
    loaded = sent(lambda: store.load(sid))
    assert loaded == {"evalsha": 1, "hgetall": 1}  # one round trip, no write (touch_after)
    session["b"] = 2
    saved = sent(lambda: store.save(session))
    assert saved["evalsha"] == 1 and "hset" in saved and "hgetall" not in saved
    session.regenerate()
    first = sent(lambda: store.save(session))  # the server learns DELETE_SCRIPT: sent again
    assert first["evalsha"] == 4 and "script|load" in first
    session.regenerate()
    regenerated = sent(lambda: store.save(session))
    assert regenerated["evalsha"] == 2  # one pipeline: delete the old, create the new
    assert "script|load" not in regenerated
    cache.close()
    admin.close()
