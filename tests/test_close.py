"""Closing a cache flushes its write-behind queues first."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from cachekit import Cache
from cachekit.testing.servers import RedisServer

from conftest import unique_prefix


@pytest.fixture(params=["memory", "redis"])
def url(request: pytest.FixtureRequest) -> str:
    if request.param == "memory":
        return "memory://"
    server: RedisServer = request.getfixturevalue("redis_server")
    return server.url


def test_close_flushes_thread_queues(url: str) -> None:
    stored: dict[Any, Any] = {}
    cache = Cache(url, prefix=unique_prefix())
    items = cache.write_behind("item:{}", store_many=stored.update, flush_interval=3600)
    for i in range(250):
        items.set(i, i)
    cache.close()  # no flush() by the user: close() must not lose the queue
    assert stored == {i: i for i in range(250)}
    assert items.pending == 0


def test_aclose_flushes_task_queues(url: str) -> None:
    stored: dict[Any, Any] = {}

    async def store_many(batch: dict[Any, Any]) -> None:
        stored.update(batch)

    async def scenario() -> None:
        cache = Cache(url, prefix=unique_prefix())
        items = cache.write_behind("item:{}", store_many=store_many, flush_interval=3600)
        for i in range(250):
            await items.aset(i, -i)
        await cache.aclose()
        cache.close()

    asyncio.run(scenario())
    assert stored == {i: -i for i in range(250)}
