"""The local_state() capability (cachekit.backends.base): where rate limits and tags keep
their state of an in-process store, shared by every cache over the store; an in-process
backend without it gets a clear error from those features."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import pytest

from cachekit import Cache, ConfigurationError
from cachekit.backends.base import LocalState, capabilities_of
from cachekit.backends.memory.store import AsyncMemoryBackend, MemoryBackend
from cachekit.ratelimit._local import LocalBuckets
from cachekit.sessions import SessionStore
from cachekit.tags.rules import MemoryTagIndex


class Counter:
    def __init__(self) -> None:
        self.n = 0


def test_one_object_per_kind_made_once_under_racing_threads() -> None:
    state = LocalState()
    made: list[object] = []
    gate = threading.Barrier(8)

    def make() -> Counter:
        made.append(1)
        return Counter()

    seen: list[Counter] = []

    def ask() -> None:
        gate.wait()
        seen.append(state.get(Counter, make))

    threads = [threading.Thread(target=ask) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(made) == 1 and all(found is seen[0] for found in seen)
    assert state.get(Counter) is seen[0]  # the default maker is the kind itself
    assert state.get(LocalBuckets) is not seen[0]  # another kind, another object
    assert LocalState().get(Counter) is not seen[0]  # another store, another object


def test_a_maker_must_make_its_kind() -> None:
    with pytest.raises(TypeError, match="Counter"):
        LocalState().get(Counter, lambda: "text")  # type: ignore[arg-type, return-value]


def test_the_memory_backend_offers_one_state_for_both_sides() -> None:
    store = MemoryBackend()
    caps = capabilities_of(store, AsyncMemoryBackend(store))
    assert caps.local_state is store.local_state()
    assert AsyncMemoryBackend(store).local_state() is store.local_state()
    assert MemoryBackend().local_state() is not store.local_state()


def test_caches_over_one_store_share_limits_and_tags_through_it() -> None:
    store = MemoryBackend()
    first, second = Cache(backend=store), Cache(backend=store)
    assert first.rate_limiter("api", rate="1/hour").hit("u").allowed
    assert not second.rate_limiter("api", rate="1/hour").hit("u").allowed
    assert len(store.local_state().get(LocalBuckets)) == 1  # the limit's state is there
    first.set("k", 1, tags=["t"])
    assert len(store.local_state().get(MemoryTagIndex)) == 1
    assert second.invalidate_tags("t") == 1 and first.get("k") is None
    other = Cache(backend=MemoryBackend())  # another store: its own limits
    assert other.rate_limiter("api", rate="1/hour").hit("u").allowed


class ThirdPartyStore:
    """An in-process backend of someone else's: the key/value contract by delegation,
    and local_state() when asked for."""

    local = True

    def __init__(self, with_state: bool) -> None:
        inner = MemoryBackend()
        for name in ("get", "get_many", "set", "add", "set_many", "delete", "delete_many",
                     "exists", "ttl", "expire", "incr", "delete_pattern", "ping", "lock",
                     "close", "translate_error"):  # fmt: skip
            setattr(self, name, getattr(inner, name))
        if with_state:
            state = LocalState()
            self.local_state: Callable[[], LocalState] = lambda: state


def test_a_third_party_store_with_local_state_gets_rate_limits_sessions_and_tags() -> None:
    store = ThirdPartyStore(with_state=True)
    cache = Cache(backend=store)
    assert cache.rate_limiter("api", rate="1/hour").hit("u").allowed
    assert not Cache(backend=store).rate_limiter("api", rate="1/hour").hit("u").allowed
    assert len(store.local_state().get(LocalBuckets)) == 1
    cache.set("k", 1, tags=["t"])
    assert cache.invalidate_tags("t") == 1
    sessions = SessionStore(cache)
    session = sessions.load(None)
    session["a"] = 1
    outcome = sessions.save(session)
    assert outcome.set_id is not None and sessions.load(outcome.set_id)["a"] == 1


def test_a_third_party_store_without_local_state_is_told_what_it_lacks() -> None:
    cache = Cache(backend=ThirdPartyStore(with_state=False), on_error="raise")
    cache.set("k", 1)  # the key/value contract is all it needs for the rest
    assert cache.get("k") == 1
    for feature in (
        lambda: cache.rate_limiter("api", rate="1/hour"),
        lambda: SessionStore(cache),
        lambda: cache.set("t", 1, tags=["t"]),
        lambda: cache.invalidate_tags("t"),
    ):
        with pytest.raises(ConfigurationError, match=r"local_state\(\)"):
            feature()


def test_the_async_side_shares_the_state() -> None:
    store = MemoryBackend()
    cache = Cache(backend=store)
    limiter = cache.rate_limiter("api", rate="2/hour")

    async def main() -> list[Any]:
        return [(await limiter.ahit("u")).allowed, limiter.hit("u").allowed]

    assert asyncio.run(main()) == [True, True]
    assert not limiter.hit("u").allowed
    assert len(store.local_state().get(LocalBuckets)) == 1
