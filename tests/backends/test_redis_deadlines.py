"""The socket timeout of cachekit's asyncio connections, kept by the deadline thread
(cachekit.backends.redis.deadlines) instead of a timer per command: a frozen Redis is
still given up on, a command never schedules a timer, a caller's own timeout is its own."""

from __future__ import annotations

import asyncio
import os
import select
import socket
import time
from typing import Any

import pytest
import redis
import redis.asyncio
import redis.exceptions
from conftest import unique_prefix

from cachekit import Cache
from cachekit.backends.redis.deadlines import kernel_timed, watched
from cachekit.testing.servers import ClusterServers, RedisServer, SentinelServers

DEADLINE = 0.3


def _cache(server: RedisServer, **options: Any) -> Cache:
    return Cache(server.url, prefix=unique_prefix(), timeout=DEADLINE, **options)


def test_a_frozen_redis_times_out_a_read_and_the_connection_recovers(
    private_redis: RedisServer,
) -> None:
    cache = _cache(private_redis, on_error="raise")

    async def main() -> None:
        client = cache.async_client
        await client.set("k", b"v")
        private_redis.freeze()
        try:
            began = time.monotonic()
            with pytest.raises(redis.exceptions.TimeoutError, match="Timeout reading"):
                await client.get("k")
            waited = time.monotonic() - began
        finally:
            private_redis.thaw()
        assert DEADLINE <= waited < DEADLINE * 1.25 + 1.0  # the deadline, plus a check's period
        assert await client.get("k") == b"v"  # a new connection, as after redis-py's own

    asyncio.run(asyncio.wait_for(main(), 20))  # a hang fails, not blocks the suite
    cache.close()


def test_a_frozen_redis_serves_misses_through_the_cache(private_redis: RedisServer) -> None:
    cache = _cache(private_redis)
    calls = []

    @cache.cached(ttl=60)
    async def load(n: int) -> int:
        calls.append(n)
        return n * 2

    async def main() -> None:
        assert await load(1) == 2
        private_redis.freeze()
        try:
            assert await load(1) == 2  # the read timed out: computed, not hung
            assert await cache.aget("other", "default") == "default"
        finally:
            private_redis.thaw()

    asyncio.run(asyncio.wait_for(main(), 20))
    assert calls == [1, 1]
    cache.close()


def test_a_write_blocked_on_a_frozen_redis_times_out(private_redis: RedisServer) -> None:
    """A value bigger than the socket buffers: the write itself waits, and is given up on."""
    cache = _cache(private_redis, on_error="raise")

    async def main() -> None:
        client = cache.async_client
        await client.ping()
        private_redis.freeze()
        try:
            began = time.monotonic()
            with pytest.raises(redis.exceptions.TimeoutError):
                await client.set("big", b"x" * (64 << 20))
            assert time.monotonic() - began < DEADLINE * 1.25 + 2.0
        finally:
            private_redis.thaw()
        assert await client.ping()

    asyncio.run(asyncio.wait_for(main(), 20))
    cache.close()


async def _timers_and_tasks(client: Any, reads: int) -> tuple[list[Any], list[Any]]:
    """The timer handles and tasks the event loop was asked for during ``reads`` GETs."""
    await client.set("k", b"v")  # connected
    loop = asyncio.get_running_loop()
    call_at = loop.call_at
    scheduled: list[Any] = []
    tasks: list[Any] = []

    def counting_call_at(*args: Any, **kwargs: Any) -> Any:
        scheduled.append(args)
        return call_at(*args, **kwargs)

    def counting_task(lp: Any, coro: Any, **kw: Any) -> Any:
        tasks.append(coro)
        return asyncio.Task(coro, loop=lp, **kw)

    loop.call_at = counting_call_at  # type: ignore[method-assign]
    loop.set_task_factory(counting_task)
    try:
        for _ in range(reads):
            assert await client.get("k") == b"v"
    finally:
        loop.call_at = call_at  # type: ignore[method-assign]
        loop.set_task_factory(None)
    return scheduled, tasks


def test_a_command_schedules_no_timer(redis_server: RedisServer) -> None:
    """The point of the thread: redis-py would schedule (and cancel) a timer handle for
    every reply read, and on Python 3.11 start a task for every write."""
    cache = _cache(redis_server)

    async def main() -> tuple[list[Any], list[Any]]:
        return await _timers_and_tasks(cache.async_client, 10)  # the loop's client

    scheduled, tasks = asyncio.run(main())
    assert scheduled == [] and tasks == []
    cache.close()


def test_a_plain_redis_py_connection_does_schedule_timers(redis_server: RedisServer) -> None:
    """The test above would pass if redis-py stopped using timers: this one says it does
    (delete both when it does not: the deadline thread is then not needed)."""

    async def main() -> list[Any]:
        client = redis.asyncio.Redis.from_url(redis_server.url, socket_timeout=5.0)
        scheduled, _ = await _timers_and_tasks(client, 1)
        await client.aclose()
        return scheduled

    assert asyncio.run(main())


def test_a_caller_timeout_is_redis_pys_own(redis_server: RedisServer) -> None:
    """pub/sub ``get_message(timeout=...)`` waits its own time: returns None, no error,
    even past the connection's deadline."""
    cache = _cache(redis_server)

    async def main() -> None:
        pubsub = cache.async_client.pubsub()
        await pubsub.subscribe("nothing-here")
        assert (await pubsub.get_message(timeout=1.0))["type"] == "subscribe"
        began = time.monotonic()
        assert await pubsub.get_message(timeout=DEADLINE * 2) is None
        assert time.monotonic() - began >= DEADLINE * 2 * 0.9
        await pubsub.aclose()

    asyncio.run(main())
    cache.close()


def test_a_slow_command_within_the_deadline_is_not_cut(redis_server: RedisServer) -> None:
    """A blocking command the server answers just inside the deadline (a stampede's wait
    is sliced to 0.6 of it): the thread leaves it alone."""
    cache = _cache(redis_server)

    async def main() -> None:
        client = cache.async_client
        made = client.connection_pool.connection_class
        assert watched(made) is made  # the watched path is the one under test
        for _ in range(3):
            assert await client.blpop(["never-" + unique_prefix()], timeout=0.2) is None

    asyncio.run(main())
    cache.close()


def test_every_connection_cachekit_makes_is_watched(
    redis_server: RedisServer, redis_sentinel: SentinelServers
) -> None:
    """The URL's client, the asyncio twin of a user's sync client, a Sentinel's primary."""
    user_client = redis.Redis.from_url(redis_server.url)
    caches = [
        _cache(redis_server),
        Cache(client=user_client, prefix=unique_prefix(), timeout=DEADLINE),
        Cache(redis_sentinel.url, prefix=unique_prefix(), timeout=DEADLINE),
    ]

    async def main() -> None:
        for cache in caches:
            client = cache.async_client
            await client.ping()
            made = client.connection_pool.connection_class
            assert watched(made) is made  # already a watched class

    asyncio.run(main())
    for cache in caches:
        cache.close()
    user_client.close()


def test_every_pool_cachekit_makes_acts_on_unread_data(
    redis_server: RedisServer, redis_sentinel: SentinelServers
) -> None:
    """redis-py 8's pool ignores its unread-data check while maintenance notifications
    are on (by default "auto"): every client cachekit makes, sync and asyncio (a URL's, the
    twins of a user's client, a Sentinel's primary), has them off; a user's own client
    keeps redis-py's default."""
    user_sync = redis.Redis.from_url(redis_server.url)
    user_async = redis.asyncio.Redis.from_url(redis_server.url)
    caches = [
        _cache(redis_server),
        Cache(client=user_sync, prefix=unique_prefix(), timeout=DEADLINE),
        Cache(client=user_async, prefix=unique_prefix(), timeout=DEADLINE),
        Cache(redis_sentinel.url, prefix=unique_prefix(), timeout=DEADLINE),
    ]

    def acts(client: Any) -> bool:
        enabled = getattr(client.connection_pool, "maint_notifications_enabled", None)
        return enabled is None or not enabled()

    async def main() -> None:
        for n, cache in enumerate(caches):
            if n != 2:  # (the user's own asyncio client: below)
                assert acts(cache.async_client), n
            if n != 1:
                assert acts(cache.client), n
        await user_async.aclose()

    asyncio.run(main())
    if int(redis.__version__.split(".")[0]) >= 8:  # the point: redis-py's default skips it
        assert not acts(user_sync) and not acts(user_async)
    for cache in caches:
        cache.close()
    user_sync.close()


def test_a_users_own_async_client_is_left_as_it_is(redis_server: RedisServer) -> None:
    client = redis.asyncio.Redis.from_url(redis_server.url, socket_timeout=5.0)
    cache = Cache(client=client, prefix=unique_prefix())

    async def main() -> None:
        assert cache.async_client is client
        assert client.connection_pool.connection_class is redis.asyncio.Connection
        await client.aclose()

    asyncio.run(main())
    cache.close()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork")
def test_a_forked_child_keeps_deadlines(private_redis: RedisServer) -> None:
    """The thread does not survive fork: the child starts its own."""
    cache = _cache(private_redis)

    async def warm() -> None:
        await cache.async_client.ping()  # the parent's thread runs

    asyncio.run(warm())
    to_parent, from_child = os.pipe()
    to_child, from_parent = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            child = _cache(private_redis, on_error="raise")

            async def frozen_read() -> None:
                await child.async_client.ping()
                os.write(from_child, b"r")  # ready: freeze it
                os.read(to_child, 1)
                try:
                    await child.async_client.get("k")
                except redis.exceptions.TimeoutError:
                    os._exit(0)

            asyncio.run(asyncio.wait_for(frozen_read(), 10))
        finally:
            os._exit(code)
    assert os.read(to_parent, 1) == b"r"
    private_redis.freeze()
    os.write(from_parent, b"g")
    try:
        _, status = os.waitpid(pid, 0)
    finally:
        private_redis.thaw()
    assert os.waitstatus_to_exitcode(status) == 0
    cache.close()


def test_a_clusters_connections_are_watched(redis_cluster: ClusterServers) -> None:
    """Every node's, those found at startup and after (the nodes' shared settings)."""
    cache = Cache(redis_cluster.url, prefix=unique_prefix(), timeout=DEADLINE)

    async def main() -> None:
        client = cache.async_client
        await client.set("k", b"v")
        assert await client.get("k") == b"v"
        nodes = client.get_nodes()
        assert len(nodes) >= 3
        for node in nodes:
            assert watched(node.connection_class) is node.connection_class
        assert (
            watched(client.connection_kwargs["connection_class"])
            is (client.connection_kwargs["connection_class"])
        )

    asyncio.run(main())
    cache.close()


# -- sync: the timeout in the kernel ---------------------------------------------------------
def test_sync_a_frozen_redis_times_out_once_and_the_connection_recovers(
    private_redis: RedisServer,
) -> None:
    """redis-py's TimeoutError, after the deadline (not twice it: a ConnectionError would
    be retried by the client's retry, on a new connection to the same frozen server)."""
    cache = _cache(private_redis, on_error="raise")
    client = cache.client
    client.set("k", b"v")
    private_redis.freeze()
    try:
        began = time.monotonic()
        with pytest.raises(redis.exceptions.TimeoutError, match="Timeout reading"):
            client.get("k")
        waited = time.monotonic() - began
    finally:
        private_redis.thaw()
    assert DEADLINE * 0.9 <= waited < DEADLINE * 1.9
    assert client.get("k") == b"v"
    cache.close()


def test_sync_a_write_blocked_on_a_frozen_redis_times_out(private_redis: RedisServer) -> None:
    cache = _cache(private_redis, on_error="raise")
    client = cache.client
    client.ping()
    private_redis.freeze()
    try:
        began = time.monotonic()
        with pytest.raises(redis.exceptions.TimeoutError, match="Timeout writing"):
            client.set("big", b"x" * (64 << 20))
        assert time.monotonic() - began < DEADLINE * 2 + 2.0
    finally:
        private_redis.thaw()
    assert client.ping()
    cache.close()


def test_sync_the_socket_is_blocking_with_the_timeout_in_the_kernel(
    redis_server: RedisServer,
) -> None:
    """No Python timeout (which polls before every recv and send): the kernel's."""
    import socket
    import struct

    cache = _cache(redis_server)
    client = cache.client
    client.ping()
    connection = client.connection_pool.get_connection()
    try:
        sock = connection._sock
        assert sock.gettimeout() is None
        seconds, micros = struct.unpack(
            "ll", sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, 16)
        )
        assert abs(seconds + micros / 1e6 - DEADLINE) < 0.01
        seconds, micros = struct.unpack(
            "ll", sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, 16)
        )
        assert abs(seconds + micros / 1e6 - DEADLINE) < 0.01
    finally:
        client.connection_pool.release(connection)
    cache.close()


def test_sync_a_pubsub_wait_of_its_own_is_not_cut(redis_server: RedisServer) -> None:
    cache = _cache(redis_server)
    made = cache.client.connection_pool.connection_class
    assert kernel_timed(made) is made  # the kernel-timed path is the one under test
    pubsub = cache.client.pubsub()
    pubsub.subscribe("nothing-here")
    assert pubsub.get_message(timeout=1.0)["type"] == "subscribe"
    began = time.monotonic()
    assert pubsub.get_message(timeout=DEADLINE * 2) is None
    assert time.monotonic() - began >= DEADLINE * 2 * 0.9
    pubsub.close()
    cache.close()


def test_a_memory_cache_has_no_async_client() -> None:
    from cachekit.exceptions import ConfigurationError

    with pytest.raises(ConfigurationError, match="no Redis client"):
        Cache().async_client  # noqa: B018


def test_the_watch_holds_no_connection_alive(redis_server: RedisServer) -> None:
    """A client dropped by its owner is collected, its connections too, while the deadline
    thread runs (it holds them weakly, and lets go of each look's list)."""
    import gc
    import weakref

    from cachekit.backends.redis import deadlines

    async def main() -> Any:
        client = redis.asyncio.Redis.from_url(redis_server.url, socket_timeout=DEADLINE)
        deadlines.watch_client(client)
        await client.ping()
        connection = client.connection_pool._available_connections[0]
        assert connection in set(deadlines._WATCH._connections)
        await asyncio.sleep(DEADLINE)  # the thread looks at it a few times (no event to wait on)
        gone = weakref.ref(connection)
        await client.aclose()
        return gone

    gone = asyncio.run(main())
    for _ in range(50):  # a few of the thread's looks (each DEADLINE / 4)
        gc.collect()
        if gone() is None:
            break
        time.sleep(DEADLINE / 4)
    assert gone() is None


# -- the pool's "has this connection unread data?" check, without a turn of the loop -------


def _hiredis_parser() -> Any:
    pytest.importorskip("hiredis")
    from redis._parsers.hiredis import _AsyncHiredisParser

    return _AsyncHiredisParser


_PING = b"*1\r\n$4\r\nPING\r\n"


def _wait_readable(connection: Any) -> None:
    """Block (no turn of the loop) until the connection's socket has bytes."""
    poll = select.poll()
    poll.register(connection._writer.transport.get_extra_info("socket").fileno(), select.POLLIN)
    assert poll.poll(5000)


async def _leave_a_reply_unread(client: Any, where: str) -> None:
    """Hand a connection back to the pool with a reply nobody read: still in the socket,
    read off it into the stream's buffer by the loop, or into the hiredis parser's."""
    pool = client.connection_pool
    connection = await pool.get_connection()
    parser = connection._parser
    if where == "parser":
        await connection.send_packed_command(_PING * 2)  # two replies, read in one go
        _wait_readable(connection)
        while parser._stream._buffer.count(b"PONG") < 2:  # both in, before the read
            await asyncio.sleep(0.001)
        assert await connection.read_response() == b"PONG"
        assert parser._reader.has_data() and not parser._stream._buffer
    else:
        await connection.send_packed_command(_PING)
        _wait_readable(connection)
        if where == "stream":
            while not parser._stream._buffer:  # the loop reads it off the socket
                await asyncio.sleep(0.001)
    await pool.release(connection)


@pytest.mark.parametrize("where", ["socket", "stream", "parser"])
def test_a_connection_with_an_unread_reply_is_not_reused(
    redis_server: RedisServer, where: str
) -> None:
    """A reply left on a connection (a command abandoned halfway) must never become the
    answer to the next command: the pool is told the connection has data, and reconnects."""
    _hiredis_parser()
    cache = _cache(redis_server)

    async def main() -> None:
        client = cache.async_client
        await client.set("k", b"v")
        await _leave_a_reply_unread(client, where)
        assert await client.get("k") == b"v"  # not b"PONG"
        assert await client.get("k") == b"v"

    asyncio.run(asyncio.wait_for(main(), 20))
    cache.close()


def test_redis_pys_own_check_misses_a_reply_still_in_the_socket(
    redis_server: RedisServer,
) -> None:
    """Why the check above is cachekit's: redis-py's (hiredis parser, zero timeout) lets
    the timeout win over a reply in the socket, which then answers the next command.
    When this fails, redis-py has fixed it (keep the test above; this one can go)."""
    _hiredis_parser()

    async def main() -> Any:
        client = redis.asyncio.Redis.from_url(redis_server.url)
        await client.set("k", b"v")
        await _leave_a_reply_unread(client, "socket")
        answer = await client.get("k")
        await client.aclose()
        return answer

    assert asyncio.run(asyncio.wait_for(main(), 20)) == b"PONG"


def test_a_connection_the_server_closed_is_reconnected(redis_server: RedisServer) -> None:
    _hiredis_parser()
    cache = _cache(redis_server)

    async def main() -> None:
        client = cache.async_client
        await client.set("k", b"v")
        (mine,) = client.connection_pool._available_connections
        await client.client_kill_filter(_id=await client.client_id(), skipme=False)
        assert await client.get("k") == b"v"
        assert mine.is_connected

    asyncio.run(asyncio.wait_for(main(), 20))
    cache.close()


async def _loop_turns_per_get(client: Any, gets: int = 10) -> float:
    await client.set("k", b"v")
    await client.get("k")  # connected
    loop: Any = asyncio.get_running_loop()
    turns = 0
    run_once = loop._run_once

    def counting() -> None:
        nonlocal turns
        turns += 1
        run_once()

    loop._run_once = counting  # the instance's: run_forever looks it up each turn
    try:
        for _ in range(gets):
            assert await client.get("k") == b"v"
    finally:
        del loop._run_once
    return turns / gets


def test_a_clean_connection_is_handed_out_without_a_turn_of_the_loop(
    redis_server: RedisServer,
) -> None:
    """redis-py < 8's hiredis check reads under a zero timeout (two more turns of the
    event loop per command); a clean connection of cachekit's is told clean without one.
    The plain client is the control: the day it takes as few turns, the check can go."""
    _hiredis_parser()
    cache = _cache(redis_server)

    async def main() -> tuple[float, float]:
        plain = redis.asyncio.Redis.from_url(redis_server.url)
        try:
            return await _loop_turns_per_get(cache.async_client), await _loop_turns_per_get(plain)
        finally:
            await plain.aclose()

    ours, plain = asyncio.run(asyncio.wait_for(main(), 20))
    assert ours <= 2 and ours < plain  # the write and the reply's read
    cache.close()


def _sync_leave_a_reply_unread(client: Any, where: str) -> None:
    pool = client.connection_pool
    connection = pool.get_connection()
    sock = connection._sock
    replies = 2 if where == "parser" else 1
    connection.send_packed_command([_PING * replies])
    deadline = time.monotonic() + 5
    while len(sock.recv(64, socket.MSG_PEEK)) < 7 * replies:  # all in the socket
        assert time.monotonic() < deadline
    if where == "parser":
        assert connection.read_response() == b"PONG"  # one recv took both
        assert connection._parser._reader.has_data()
    pool.release(connection)


@pytest.mark.parametrize("where", ["socket", "parser"])
def test_sync_a_connection_with_an_unread_reply_is_not_reused(
    redis_server: RedisServer, where: str
) -> None:
    pytest.importorskip("hiredis")
    cache = _cache(redis_server)
    client = cache.client
    client.set("k", b"v")
    _sync_leave_a_reply_unread(client, where)
    assert client.get("k") == b"v"  # not b"PONG"
    assert client.get("k") == b"v"
    cache.close()


def test_sync_a_clean_connection_is_handed_out_without_a_recv(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """redis-py's hiredis check is a non-blocking recv (the socket's mode switched twice);
    a clean connection of cachekit's is told clean by one poll. (redis-py 8 polls too:
    its own check is kept there.)"""
    pytest.importorskip("hiredis")
    if int(redis.__version__.split(".")[0]) >= 8:
        pytest.skip("redis-py 8 checks by poll itself")
    from redis._parsers.hiredis import _HiredisParser

    asked: list[Any] = []
    original = _HiredisParser.can_read

    def counting(self: Any, timeout: float) -> bool:
        asked.append(self)
        return bool(original(self, timeout))

    monkeypatch.setattr(_HiredisParser, "can_read", counting)
    cache = _cache(redis_server)
    cache.client.set("k", b"v")
    for _ in range(10):
        assert cache.client.get("k") == b"v"
    assert asked == []
    cache.close()
    plain = redis.Redis.from_url(redis_server.url)  # the check above is not vacuous
    plain.get("k")
    plain.close()
    assert asked
