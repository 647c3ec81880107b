"""Failovers on a real Redis Cluster (3 primaries, a replica each) and behind Sentinel:
reads fail open while a primary is away, hit again once its replica took over; a lock
whose key a failover lost is reported lost to its holder (``extend``/``release`` raise),
while another owner may take it: never two holders that both believe they hold it."""

from __future__ import annotations

import asyncio
import gc
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from redis.cluster import RedisCluster

from cachekit import Cache
from cachekit.exceptions import BackendError, LockNotOwnedError
from cachekit.testing.servers import ClusterServers, RedisServer, SentinelServers, find_redis_cli

# redis-py's asyncio cluster client leaks the connections of a node its topology refresh
# dropped after a failover (redis/redis-py#4053; aclose() no longer reaches them): their
# ResourceWarnings (unclosed ClusterNode, socket, transport) are not these tests' subject
pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::ResourceWarning")]


@pytest.fixture(autouse=True)
def _collect_what_failovers_leak() -> Iterator[None]:
    """What a failover test leaks (see ``pytestmark``) is collected at its end, here,
    and not in whichever later test the garbage collector happens to run."""
    yield
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()


@pytest.fixture
def cluster() -> Iterator[ClusterServers]:
    """A cluster of the test's own (it kills and promotes nodes): 1 s node timeout."""
    if find_redis_cli() is None:
        pytest.skip("a Redis Cluster needs redis-cli (apt install redis-tools)")
    servers = ClusterServers(masters=3, replicas=1, node_timeout=1000)
    yield servers
    servers.stop()


@pytest.fixture
def sentinel() -> Iterator[SentinelServers]:
    servers = SentinelServers(down_after=500)
    yield servers
    servers.stop()


def _eventually(check: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out: {what}")
        time.sleep(0.05)  # polling a failover in other processes: no event to wait on


def _replicated(primary: RedisServer, replica: RedisServer) -> bool:
    a = redis.Redis(port=primary.port)
    b = redis.Redis(port=replica.port)
    try:
        offset = int(a.info("replication")["master_repl_offset"])
        return int(b.info("replication")["slave_repl_offset"]) >= offset
    finally:
        a.close()
        b.close()


def _role(server: RedisServer) -> str:
    client = redis.Redis(port=server.port)
    try:
        return str(client.info("replication")["role"])
    finally:
        client.close()


def _cache(url: str) -> Cache:
    return Cache(url, prefix=f"fo{uuid.uuid4().hex[:8]}", timeout=1.0, retry_interval=0.05)


def test_cluster_primary_killed_reads_fail_open_then_hit(cluster: ClusterServers) -> None:
    cache = _cache(cluster.url)
    keys = [f"k{i}" for i in range(60)]  # on every primary
    cache.set_many({k: k for k in keys}, ttl=300)
    victim = cluster.primaries()[0]
    (replica,) = cluster.replicas_of(victim)
    _eventually(lambda: _replicated(victim, replica), "replication")
    victim.kill()
    during = cache.get_many(keys)  # no exception: the cache fails open
    assert len(during) < len(keys)
    _eventually(lambda: cache.get_many(keys) == {k: k for k in keys}, "hits after failover")
    assert replica.port in [n.port for n in cluster.primaries()]
    cache.set("after", 1)
    assert cache.get("after") == 1
    cache.close()


def test_cluster_failover_command_loses_nothing(cluster: ClusterServers) -> None:
    cache = _cache(cluster.url)
    keys = [f"k{i}" for i in range(60)]
    cache.set_many({k: k for k in keys}, ttl=300)
    assert cache.get_many(keys) == {k: k for k in keys}
    for primary in cluster.primaries():
        (replica,) = cluster.replicas_of(primary)
        cluster.failover(replica)  # a manual failover: no write is lost
    # redis-py follows MOVED to the promoted replicas: reads, and batches whose scripts
    # were routed to the old primaries (invalidation marks, tags)
    cache.delete_many(keys[:10])  # first, on the client's old slot map
    cache.set("tagged", 1, tags=("t",))
    cache.invalidate_tags("t")

    # on a loaded machine a node can still answer with the old map for a moment (an
    # error, failed open: kept as a pending invalidation); a deleted entry is never
    # served, and the cache settles on the right content
    def settled() -> bool:
        got = cache.get_many([*keys, "tagged"])
        assert not set(got) & {*keys[:10], "tagged"}, got
        return got == {k: k for k in keys[10:]}

    _eventually(settled, "the cache to settle after the failovers")
    cache.close()


def test_sentinel_failover_reads_fail_open_then_hit(sentinel: SentinelServers) -> None:
    cache = _cache(sentinel.url)
    cache.set_many({f"k{i}": i for i in range(20)}, ttl=300)
    old = sentinel.primary()
    (replica,) = [s for s in sentinel.servers if s is not old]
    _eventually(lambda: _replicated(old, replica), "replication")
    old.kill()
    assert cache.get("k1", "default") == "default"  # fails open while the primary is down
    _eventually(lambda: cache.get("k1") == 1, "hits after the sentinel failover")
    assert sentinel.primary_port() == replica.port
    cache.set("after", 1)
    assert cache.get("after") == 1
    cache.close()


def test_sentinel_graceful_failover_keeps_working(sentinel: SentinelServers) -> None:
    cache = _cache(sentinel.url)
    cache.set("k", "v", ttl=300)
    old = sentinel.primary_port()
    sentinel.failover()
    assert sentinel.primary_port() != old
    # the old primary is a replica now: a write there is refused (READONLY) and redis-py
    # asks the sentinel again
    _eventually(lambda: cache.set("k2", "v2") and cache.get("k2") == "v2", "writes")
    assert cache.get("k") == "v"
    cache.close()


def test_lock_lost_in_a_cluster_failover_is_reported_to_its_holder(
    cluster: ClusterServers,
) -> None:
    """The lock's write never reached the replica (frozen), the primary dies, the replica
    is promoted without it: another owner takes the lock; the first holder's ``extend``
    and ``release`` raise instead of silently going on."""
    holder = _cache(cluster.url)
    rival = Cache(cluster.url, prefix=holder.prefix, timeout=1.0, retry_interval=0.05)
    lock = holder.lock("order:1", ttl=30)
    probe = RedisCluster(host="127.0.0.1", port=cluster.ports[0])
    assert lock.acquire(blocking=False)
    key = next(iter(probe.scan_iter(match=f"#{holder.prefix}*", target_nodes=probe.ALL_NODES)))
    lock.release()
    primary_port = probe.get_node_from_key(key).port
    primary = cluster.node(primary_port)
    (replica,) = cluster.replicas_of(primary)
    probe.close()

    replica.freeze()
    assert lock.acquire(blocking=False)  # on the primary only
    primary.kill()
    replica.thaw()
    promote = redis.Redis(port=replica.port)
    promote.execute_command("CLUSTER", "FAILOVER", "TAKEOVER")  # no agreement needed
    promote.close()
    _eventually(lambda: _role(replica) == "master", "the takeover")
    cluster.wait_ok()
    # replication is asynchronous: the lost case for certain (see the sentinel test)
    _lose_lock_writes(replica, holder.prefix)

    def rival_takes_it() -> bool:
        try:
            return bool(rival.lock("order:1", ttl=30).acquire(blocking=False))
        except BackendError:  # the move is not finished for this client yet
            return False

    _eventually(rival_takes_it, "the rival to take the lost lock")
    # while the holder's client has not reached the new primary, a lock call raises
    # BackendUnavailableError (locks never fail open); then: not owned
    _eventually(lambda: _reported_lost(lambda: lock.extend(10)), "extend to report the loss")
    _eventually(lambda: _reported_lost(lock.release), "release to report the loss")
    holder.close()
    rival.close()


def test_lock_kept_across_a_manual_cluster_failover(cluster: ClusterServers) -> None:
    holder = _cache(cluster.url)
    rival = Cache(cluster.url, prefix=holder.prefix, timeout=1.0)
    lock = holder.lock("order:2", ttl=30)
    assert lock.acquire(blocking=False)
    for primary in cluster.primaries():
        (replica,) = cluster.replicas_of(primary)
        cluster.failover(replica)
    assert not rival.lock("order:2", ttl=30).acquire(blocking=False)  # held once
    assert lock.extend(10)
    lock.release()
    assert rival.lock("order:2", ttl=30).acquire(blocking=False)
    holder.close()
    rival.close()


def test_lock_lost_in_a_sentinel_failover_is_reported_to_its_holder(
    sentinel: SentinelServers,
) -> None:
    holder = _cache(sentinel.url)
    rival = Cache(sentinel.url, prefix=holder.prefix, timeout=1.0, retry_interval=0.05)
    old = sentinel.primary()
    (replica,) = [s for s in sentinel.servers if s is not old]
    lock = holder.lock("order:3", ttl=60)
    replica.freeze()
    assert lock.acquire(blocking=False)  # on the primary; the replica is not reading
    old.kill()
    replica.thaw()
    _eventually(lambda: sentinel.primary_port() == replica.port, "the sentinel failover")
    # Replication is asynchronous: the lock's write may have reached the frozen replica's
    # socket before the primary died, or not. The lost case, for certain:
    _lose_lock_writes(replica, holder.prefix)

    def rival_takes_it() -> bool:
        try:
            return bool(rival.lock("order:3", ttl=60).acquire(blocking=False))
        except BackendError:  # not moved over for this client yet
            return False

    _eventually(rival_takes_it, "the rival to take the lost lock after the failover")
    # while the holder's client has not reached the new primary, a lock call raises
    # BackendUnavailableError (locks never fail open); then: not owned
    _eventually(lambda: _reported_lost(lambda: lock.extend(10)), "extend to report the loss")
    _eventually(lambda: _reported_lost(lock.release), "release to report the loss")
    assert not holder.lock("order:3", ttl=60).acquire(blocking=False)  # the rival holds it
    holder.close()
    rival.close()


def test_lock_kept_across_a_sentinel_failover_is_held_once(sentinel: SentinelServers) -> None:
    """A lock the failover carried over (replicated before the move) stays its holder's."""
    holder = _cache(sentinel.url)
    rival = Cache(sentinel.url, prefix=holder.prefix, timeout=1.0, retry_interval=0.05)
    old = sentinel.primary()
    (replica,) = [s for s in sentinel.servers if s is not old]
    lock = holder.lock("order:4", ttl=60)
    assert lock.acquire(blocking=False)
    _eventually(lambda: _replicated(old, replica), "replication")
    sentinel.failover()

    def rival_tries() -> bool:
        try:
            return not rival.lock("order:4", ttl=60).acquire(blocking=False)
        except BackendError:
            return False

    _eventually(rival_tries, "the rival to reach the new primary")  # and be refused
    # until the sentinel has turned the old primary into a replica, a client still
    # connected to it writes there (a release landing there would be lost in its resync:
    # the lock then ends by its ttl, never held twice)
    # (the sentinel demotes it on an INFO of it: seconds apart, more on a loaded machine)
    _eventually(lambda: _role(old) == "slave", "the old primary to follow the new one", 90.0)
    _eventually(lambda: _extends(lock), "the holder to reach the new primary")
    lock.release()
    assert rival.lock("order:4", ttl=60).acquire(blocking=False)
    holder.close()
    rival.close()


def _reported_lost(call: Callable[[], Any]) -> bool:
    """True once ``call`` raises LockNotOwnedError; False while Redis is out of reach."""
    try:
        call()
    except LockNotOwnedError:
        return True
    except BackendError:
        return False
    raise AssertionError("a lost lock was extended or released as if still held")


def _extends(lock: Any) -> bool:
    try:
        return bool(lock.extend(10))
    except LockNotOwnedError:
        raise
    except BackendError:
        return False


def _lose_lock_writes(server: RedisServer, prefix: str) -> None:
    client = redis.Redis(port=server.port)
    try:
        for key in client.scan_iter(match=f"#{prefix}*"):
            client.delete(key)
    finally:
        client.close()


async def _aeventually(check: Callable[[], Any], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out: {what}")
        await asyncio.sleep(0.05)  # polling a failover in other processes


async def test_async_cluster_primary_killed_fails_open_then_hits(cluster: ClusterServers) -> None:
    cache = _cache(cluster.url)
    keys = [f"k{i}" for i in range(60)]
    await cache.aset_many({k: k for k in keys}, ttl=300)
    victim = cluster.primaries()[1]
    (replica,) = cluster.replicas_of(victim)
    _eventually(lambda: _replicated(victim, replica), "replication")
    victim.kill()
    assert len(await cache.aget_many(keys)) < len(keys)  # fails open, no exception

    async def all_hit() -> bool:
        return await cache.aget_many(keys) == {k: k for k in keys}

    await _aeventually(all_hit, "async hits after failover")
    assert await cache.aset("after", 1)
    assert await cache.aget("after") == 1
    await cache.aclose()
    cache.close()


async def test_async_sentinel_primary_killed_fails_open_then_hits(
    sentinel: SentinelServers,
) -> None:
    cache = _cache(sentinel.url)
    await cache.aset("k", "v", ttl=300)
    old = sentinel.primary()
    (replica,) = [s for s in sentinel.servers if s is not old]
    _eventually(lambda: _replicated(old, replica), "replication")
    old.kill()
    assert await cache.aget("k", "default") == "default"

    async def hits() -> bool:
        return await cache.aget("k") == "v"

    await _aeventually(hits, "async hits after the sentinel failover")
    await cache.aclose()
    cache.close()


def test_cluster_primary_frozen_costs_one_timeout_then_hits(cluster: ClusterServers) -> None:
    """A primary that stops answering (SIGSTOP): a call waits at most a timeout or two
    (then the circuit is open and calls fail open at once), never one per key; its
    replica takes over, the old primary comes back as a replica, every key hits again."""
    cache = Cache(cluster.url, prefix=f"fz{uuid.uuid4().hex[:8]}", timeout=0.3, retry_interval=0.05)
    keys = [f"k{i}" for i in range(30)]
    cache.set_many({k: k for k in keys}, ttl=300)
    frozen = cluster.primaries()[0]
    (replica,) = cluster.replicas_of(frozen)
    _eventually(lambda: _replicated(frozen, replica), "replication")
    frozen.freeze()  # longer than the node timeout: its replica takes over meanwhile
    try:
        start = time.monotonic()
        during = cache.get_many(keys)  # misses for the frozen slots (or a replica's answer)
        first = time.monotonic() - start
        assert all(during[k] == k for k in during)
        start = time.monotonic()
        for key in keys:
            cache.get(key)
        rest = time.monotonic() - start
    finally:
        frozen.thaw()
    assert first < 6.0, first  # a timeout (0.3 s) or two, not one per key (9 s)
    assert rest < 6.0, rest
    _eventually(lambda: cache.get_many(keys) == {k: k for k in keys}, "hits after the thaw")
    cache.close()


async def test_async_batches_follow_moved_after_manual_failovers(cluster: ClusterServers) -> None:
    cache = _cache(cluster.url)
    keys = [f"k{i}" for i in range(60)]
    await cache.aset_many({k: k for k in keys}, ttl=300)  # the asyncio client's slot map
    for primary in cluster.primaries():
        (replica,) = cluster.replicas_of(primary)
        cluster.failover(replica)
    await cache.adelete_many(keys[:10])  # routed by the old map: MOVED
    await cache.aset("tagged", 1, tags=("t",))
    await cache.ainvalidate_tags("t")

    async def settled() -> bool:  # as in the sync test
        got = await cache.aget_many([*keys, "tagged"])
        assert not set(got) & {*keys[:10], "tagged"}, got
        return got == {k: k for k in keys[10:]}

    await _aeventually(settled, "the cache to settle after the failovers")
    await cache.aclose()
    cache.close()
