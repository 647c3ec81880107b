"""A stampede wrapper (lock=True, stale_ttl, early_refresh) tells what it computed from
what it read (cachekit.decorator.computed): a computed value is the function's own result,
never decoded into its annotation, for the caller, for the callers waiting in this process
and, on Redis, for another process's waiters (they compute themselves). Hits still are."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import pytest
from conftest import unique_prefix

from cachekit import Cache, SerializationError
from cachekit.testing.servers import RedisServer

LIE = "2020-01-01T00:00:00"  # what a function annotated -> datetime returns instead
STAMPEDES = [{"lock": True}, {"lock": True, "stale_ttl": 30}, {"early_refresh": True}]
IDS = ["lock", "lock+stale_ttl", "early_refresh"]


@pytest.fixture(params=["memory", "redis"])
def bytes_cache(request: pytest.FixtureRequest) -> Iterator[Cache]:
    """A cache that stores bytes (its hits are decoded into the annotation)."""
    if request.param == "memory":
        cache = Cache("memory://", serializer="orjson", prefix=unique_prefix())
    else:
        cache = Cache(request.getfixturevalue("redis_server").url, prefix=unique_prefix())
    yield cache
    cache.clear()
    cache.close()


def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """For a state no event announces (a caller joining a flight inside cachekit)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.001)


@pytest.mark.parametrize("options", STAMPEDES, ids=IDS)
def test_a_lying_annotation_converts_no_miss(bytes_cache: Cache, options: dict[str, Any]) -> None:
    calls = []

    @bytes_cache.cached(ttl=30, **options)
    def when(x: int) -> datetime:
        calls.append(x)
        return LIE  # type: ignore[return-value]

    assert [type(when(1)) for _ in range(3)] == [str, str, str]
    assert len(calls) == 3 and bytes_cache.get(when.key(1)) is None  # never stored
    # counted as the plain wrapper counts it (one "would not come back equal" a miss)
    assert bytes_cache.stats()["unencodable"] == 3
    assert when.refresh(1) == LIE and bytes_cache.get(when.key(1)) is None


@pytest.mark.parametrize("options", STAMPEDES, ids=IDS)
async def test_a_lying_annotation_converts_no_miss_async(
    bytes_cache: Cache, options: dict[str, Any]
) -> None:
    @bytes_cache.cached(ttl=30, **options)
    async def when(x: int) -> datetime:
        return LIE  # type: ignore[return-value]

    assert [type(await when(1)) for _ in range(3)] == [str, str, str]
    assert await bytes_cache.aget(when.key(1)) is None
    assert await when.arefresh(1) == LIE


@pytest.mark.parametrize("options", STAMPEDES, ids=IDS)
def test_hits_are_still_decoded(bytes_cache: Cache, options: dict[str, Any]) -> None:
    @bytes_cache.cached(ttl=30, **options)
    def pair(x: int) -> tuple[int, int]:
        return (x, x)

    miss, hit = pair(1), pair(1)
    assert miss == hit == (1, 1) and type(hit) is tuple
    assert bytes_cache.get(pair.key(1)) == [1, 1]  # stored as JSON: a list, decoded on hits


async def test_hits_are_still_decoded_async(bytes_cache: Cache) -> None:
    @bytes_cache.cached(ttl=30, lock=True)
    async def pair(x: int) -> tuple[int, int]:
        return (x, x)

    assert await pair(2) == await pair(2) == (2, 2)
    assert type(await pair(2)) is tuple


def test_waiting_threads_get_the_result_as_it_is(bytes_cache: Cache) -> None:
    """The callers that joined the computation in this process got the leader's value
    decoded into the annotation (a datetime) while the leader returned the str."""
    release = threading.Event()

    @bytes_cache.cached(ttl=30, lock=True, lock_timeout=30)
    def when(x: int) -> datetime:
        assert release.wait(10)
        return LIE  # type: ignore[return-value]

    results: list[Any] = []
    threads = [threading.Thread(target=lambda: results.append(when(1))) for _ in range(4)]
    for thread in threads:
        thread.start()
    wait_until(lambda: bytes_cache.stats()["joins"] >= 3)
    release.set()
    for thread in threads:
        thread.join(10)
    assert [type(result) for result in results] == [str] * 4


async def test_waiting_tasks_get_the_result_as_it_is(bytes_cache: Cache) -> None:
    release = asyncio.Event()

    @bytes_cache.cached(ttl=30, lock=True, lock_timeout=30)
    async def when(x: int) -> datetime:
        await release.wait()
        return LIE  # type: ignore[return-value]

    tasks = [asyncio.create_task(when(1)) for _ in range(4)]
    while bytes_cache.stats()["joins"] < 3:
        await asyncio.sleep(0)  # let the others reach the flight
    release.set()
    assert [type(result) for result in await asyncio.gather(*tasks)] == [str] * 4


def test_another_process_waiting_on_the_lock_computes_itself(
    redis_server: RedisServer,
) -> None:
    """On Redis the lock holder published the value it did not store to the waiters of
    other processes, who decoded it into the annotation (a datetime). Now they get no
    value and compute themselves; on_error="raise": the one encoding the holder tries of
    that value raises nothing."""
    prefix = unique_prefix()
    holder = Cache(redis_server.url, prefix=prefix, on_error="raise")
    waiter = Cache(redis_server.url, prefix=prefix, on_error="raise")  # its own flights
    release = threading.Event()
    calls: list[str] = []

    def make(cache: Cache, who: str) -> Any:
        @cache.cached(ttl=30, lock=True, lock_timeout=30, name="when")
        def when(x: int) -> datetime:
            calls.append(who)
            if who == "holder":
                assert release.wait(10)
            return LIE  # type: ignore[return-value]

        return when

    results: dict[str, Any] = {}
    first = threading.Thread(target=lambda: results.update(holder=make(holder, "holder")(1)))
    first.start()
    wait_until(lambda: calls == ["holder"])
    second = threading.Thread(target=lambda: results.update(waiter=make(waiter, "waiter")(1)))
    second.start()
    wait_until(lambda: waiter.stats()["lock_waits"] == 1)
    release.set()
    first.join(10)
    second.join(10)
    try:
        assert results == {"holder": LIE, "waiter": LIE}
        assert calls == ["holder", "waiter"]
        assert holder.stats()["unencodable"] == 1  # its "would not come back equal" only
    finally:
        holder.clear()
        holder.close()
        waiter.close()


def test_a_value_that_cannot_be_encoded_is_still_reported(redis_server: RedisServer) -> None:
    """The quiet encoding is only the lock holder's try at a value it computed and will
    not store: a result that cannot be encoded at all is reported as before, after a
    lying one in the same thread as well."""
    cache = Cache(redis_server.url, prefix=unique_prefix(), on_error="raise")

    @cache.cached(ttl=30, lock=True)
    def when(x: int) -> datetime:
        return LIE  # type: ignore[return-value]

    @cache.cached(ttl=30, lock=True)
    def opaque(x: int) -> datetime:
        return object()  # type: ignore[return-value]

    try:
        assert when(1) == LIE
        with pytest.raises(SerializationError):
            opaque(1)
    finally:
        cache.clear()
        cache.close()
