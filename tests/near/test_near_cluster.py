"""The near cache on a real 3-primary Redis Cluster: one invalidation link per primary,
each node's writes reaching the L1 through its own link; a node frozen, killed or
failed over stops (and flushes) the L1, which serves again once the links cover the new
primaries; a node added is linked before it takes a slot. The coherence rules shared
with standalone run on a cluster too (``test_near_coherence.py``'s ``pair``), and so
does the chaos run (``test_near_chaos``)."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from conftest import unique_prefix
from redis.cluster import RedisCluster
from test_near_coherence import caught_up, in_l1, layer_of, warm

from cachekit import MISSING, Cache
from cachekit.near._cluster import ClusterLinks
from cachekit.testing.servers import ClusterServers, find_redis_cli


def _by_node(cache: Cache, servers: ClusterServers, count: int = 30) -> dict[int, list[str]]:
    """``count`` keys of ``cache`` grouped by the port of the primary holding them; every
    primary holds some."""
    client = RedisCluster(host="127.0.0.1", port=servers.primaries()[0].port)
    try:
        nodes: dict[int, list[str]] = {}
        for i in range(count):
            slot = client.keyslot(cache.make_key(f"k{i}"))
            port = client.nodes_manager.get_node_from_slot(slot).port
            nodes.setdefault(port, []).append(f"k{i}")
    finally:
        client.close()
    assert len(nodes) == 3, nodes
    return nodes


def _links(cache: Cache) -> ClusterLinks:
    link = layer_of(cache).link
    assert isinstance(link, ClusterLinks)
    return link


def _eventually(check: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out: {what}")
        time.sleep(0.05)  # a failover in other processes: no event to wait on


def _replica_of(servers: ClusterServers, primary: Any) -> Any:
    """``primary``'s one replica, once the primary lists it (a new cluster's nodes learn
    of each other over a moment)."""
    _eventually(lambda: len(servers.replicas_of(primary)) == 1, "the replica to be known")
    return servers.replicas_of(primary)[0]


def _from_l1_only(cache: Cache, key: str, reads: int = 20) -> list[Any]:
    """``reads`` reads of ``key`` that must not go to Redis (the L1 serves them)."""
    backend = cache._backend
    real = backend._inner_scripts.batch  # type: ignore[attr-defined]

    def refused(fill: Any) -> Any:
        raise AssertionError("a read went to Redis")

    backend._inner_scripts.batch = refused  # type: ignore[attr-defined]
    try:
        return [cache.get(key) for _ in range(reads)]
    finally:
        backend._inner_scripts.batch = real  # type: ignore[attr-defined]


@pytest.fixture
def near_on(redis_cluster: ClusterServers) -> Iterator[Cache]:
    cache = Cache(redis_cluster.url, prefix=unique_prefix(), near=True)
    yield cache
    cache.clear()
    cache.close()


_WRITER = """
import sys
from cachekit import MISSING, Cache
with Cache(sys.argv[1], prefix=sys.argv[2]) as cache:
    cache.set_many({key: "new" for key in sys.argv[3:]})
"""


def test_another_process_writing_on_every_primary_invalidates(
    near_on: Cache, redis_cluster: ClusterServers
) -> None:
    a = near_on
    keys = [key for group in _by_node(a, redis_cluster).values() for key in group]
    a.set_many({key: "old" for key in keys})
    caught_up(a)
    assert a.get_many(keys) == {key: "old" for key in keys}  # one MGET per slot
    caught_up(a)
    assert all(in_l1(a, key) for key in keys)
    assert _from_l1_only(a, keys[0], 3) == ["old"] * 3
    subprocess.run(
        [sys.executable, "-c", _WRITER, redis_cluster.url, a.prefix, *keys],
        check=True,
        timeout=60,
    )
    caught_up(a)
    assert [key for key in keys if in_l1(a, key)] == []
    assert a.get_many(keys) == {key: "new" for key in keys}


def test_each_primarys_link_reports_its_own_writes(
    near_on: Cache, redis_cluster: ClusterServers
) -> None:
    """b writes one key on each primary in turn: a drops exactly that key each time."""
    a = near_on
    b = Cache(redis_cluster.url, prefix=a.prefix)
    try:
        groups = _by_node(a, redis_cluster)
        firsts = [group[0] for group in groups.values()]
        for key in firsts:
            a.set(key, "old")
        for key in firsts:
            warm(a, key)
        for n, key in enumerate(firsts):
            b.set(key, "new")
            caught_up(a)
            assert not in_l1(a, key)
            assert all(in_l1(a, other) for other in firsts[n + 1 :])
            assert a.get(key) == "new"
    finally:
        b.close()


# -- a cluster of the test's own: freezing, killing, failing over ------------------------
@pytest.fixture
def cluster() -> Iterator[ClusterServers]:
    """3 primaries with a replica each, 1 s node timeout (the test freezes and kills)."""
    if find_redis_cli() is None:
        pytest.skip("a Redis Cluster needs redis-cli (apt install redis-tools)")
    servers = ClusterServers(masters=3, replicas=1, node_timeout=1000)
    yield servers
    servers.stop()


def _near(servers: ClusterServers) -> Cache:
    return Cache(
        servers.url, prefix=unique_prefix(), near={"max_stale": 0.5}, timeout=0.2,
        retry_interval=0.05,
    )  # fmt: skip


def test_a_frozen_primary_stops_the_l1_within_max_stale(cluster: ClusterServers) -> None:
    a = _near(cluster)
    try:
        groups = _by_node(a, cluster)
        keys = [group[0] for group in groups.values()]
        for key in keys:
            a.set(key, 1)
        for key in keys:
            warm(a, key)
        store = layer_of(a).store
        victim = cluster.node(next(iter(groups)))
        victim.freeze()
        try:
            frozen_at = time.monotonic()
            assert store.serve_until <= frozen_at + 0.5 + 0.01
            served = 0
            while store.serving():
                assert time.monotonic() < frozen_at + 0.5 + 0.05, "served past max_stale"
                served += a.get(keys[-1]) == 1
            assert served > 0
            # not from the L1, whichever node holds the key: the frozen one's link
            # confirms nothing, and the bound is the oldest confirmation of all
            assert not store.serving()
            assert a.get(keys[0]) is None  # a fail-open miss: its node is frozen
        finally:
            victim.thaw()
        assert _links(a).caught_up(10.0)
        assert store.serving()

        def hits_again() -> bool:  # once the cache's breaker lets reads through again
            return a.get(keys[0]) == 1 and _links(a).caught_up(1.0) and in_l1(a, keys[0])

        _eventually(hits_again, "near hits on the thawed node")
    finally:
        a.close()


def test_a_primary_killed_flushes_then_its_replica_is_linked(cluster: ClusterServers) -> None:
    a = _near(cluster)
    b = Cache(cluster.url, prefix=a.prefix, timeout=1.0, retry_interval=0.05)
    try:
        groups = _by_node(a, cluster)
        victim_port, victim_keys = next(iter(groups.items()))
        victim = cluster.node(victim_port)
        replica = _replica_of(cluster, victim)
        keys = [group[0] for group in groups.values()]
        a.set_many({key: "before" for key in keys})
        for key in keys:
            warm(a, key)
        links, store = _links(a), layer_of(a).store
        flushes = store.flushes
        victim.kill()
        _eventually(lambda: not store.serving() and store.flushes > flushes, "the L1 to stop")
        assert len(store) == 0 or not store.serving()
        # the replica takes over; the links follow the new primaries
        expected = sorted(
            f"127.0.0.1:{port}" for port in [*groups, replica.port] if port != victim_port
        )
        _eventually(lambda: links.caught_up(1.0) and links.nodes == expected, "the new links")
        assert a.get(victim_keys[0]) in ("before", None)  # replicated, or lost with its node
        b.set(victim_keys[0], "after")  # on the promoted replica
        caught_up(a)
        assert warm(a, victim_keys[0]) == "after"
        assert _from_l1_only(a, victim_keys[0]) == ["after"] * 20  # near hits again
        b.set(victim_keys[0], "again")  # reported by the new primary's link
        caught_up(a)
        assert not in_l1(a, victim_keys[0])
        assert a.get(victim_keys[0]) == "again"
    finally:
        a.close()
        b.close()


def test_a_manual_failover_moves_the_link_to_the_new_primary(cluster: ClusterServers) -> None:
    """CLUSTER FAILOVER: the old primary lives on as a replica (its link does not drop);
    the watcher sees the new primary, relinks, flushes; writes there reach the L1."""
    a = _near(cluster)
    b = Cache(cluster.url, prefix=a.prefix, timeout=1.0, retry_interval=0.05)
    try:
        groups = _by_node(a, cluster)
        old_port, moved = next(iter(groups.items()))
        replica = _replica_of(cluster, cluster.node(old_port))
        a.set(moved[0], "before")
        warm(a, moved[0])
        links, store = _links(a), layer_of(a).store
        rebuilds = links.rebuilds
        cluster.failover(replica)
        expected = sorted(
            f"127.0.0.1:{port}" for port in [*groups, replica.port] if port != old_port
        )
        # while some node still lists the old primary as one, both are linked
        _eventually(lambda: links.nodes == expected, "the links to follow the failover")
        assert links.rebuilds > rebuilds
        assert not in_l1(a, moved[0])  # flushed when the links changed
        _eventually(lambda: b.set(moved[0], "after") and links.caught_up(1.0), "a write")
        assert warm(a, moved[0]) == "after"
        b.set(moved[0], "again")
        caught_up(a)
        assert not in_l1(a, moved[0])
        assert a.get(moved[0]) == "again"
        assert store.serving()
    finally:
        a.close()
        b.close()


# -- chaos on a cluster: the standalone run's workers and checker ------------------------
def _links_up_everywhere(servers: ClusterServers, links: int = 4, timeout: float = 15.0) -> None:
    """Until every primary has ``links`` invalidation links (one per worker)."""
    import redis

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        counts = []
        for node in servers.primaries():
            with redis.Redis(port=node.port) as admin:
                counts.append(len(admin.client_list(_type="pubsub")))
        if min(counts) >= links:
            return
        time.sleep(0.02)  # other processes' links: polled


def _cut_everywhere(servers: ClusterServers) -> int:
    import redis

    cut = 0
    for node in servers.primaries():
        with redis.Redis(port=node.port) as admin:
            cut += int(admin.client_kill_filter(_type="pubsub"))
    return cut


@pytest.mark.slow
def test_chaos_on_a_cluster_no_read_older_than_max_stale(
    cluster: ClusterServers, tmp_path: Any
) -> None:
    """4 processes (2 sync, 2 asyncio) on a cluster while every link is cut, a primary is
    frozen and two shards fail over (CLUSTER FAILOVER: no write lost, so every stale
    read the checker finds would be the near cache's)."""
    import json
    import multiprocessing

    from test_near_chaos import _worker, stale_reads

    prefix = unique_prefix()
    context = multiprocessing.get_context("spawn")
    stop = context.Event()
    outs = [str(tmp_path / f"w{i}.json") for i in range(4)]
    workers = [
        context.Process(
            target=_worker, args=(cluster.url, prefix, f"w{i}", i % 2 == 1, outs[i], stop)
        )
        for i in range(4)
    ]
    for worker in workers:
        worker.start()
    events: list[Any] = []
    try:
        _links_up_everywhere(cluster)
        time.sleep(0.8)  # the workload's own pace
        events.append(("cut", _cut_everywhere(cluster)))
        time.sleep(0.5)
        _links_up_everywhere(cluster)
        frozen = cluster.primaries()[1]
        frozen.freeze()
        time.sleep(0.3)  # below the node timeout: no failover
        frozen.thaw()
        events.append(("freeze", frozen.port))
        time.sleep(0.5)
        for primary in cluster.primaries()[:2]:
            replica = _replica_of(cluster, primary)
            cluster.failover(replica)
            events.append(("failover", primary.port, replica.port))
            time.sleep(0.6)
        _links_up_everywhere(cluster)
        events.append(("cut", _cut_everywhere(cluster)))
        _links_up_everywhere(cluster)
        time.sleep(0.5)  # reads after the last reconnect
    finally:
        stop.set()
        for worker in workers:
            worker.join(60)
    assert [worker.exitcode for worker in workers] == [0, 0, 0, 0]
    results = [json.loads((tmp_path / f"w{i}.json").read_text()) for i in range(4)]
    reads = [tuple(r) for result in results for r in result["reads"]]
    writes = [tuple(w) for result in results for w in result["writes"]]
    stale = stale_reads(reads, writes)  # type: ignore[arg-type]
    assert stale == [], stale[:10]
    assert len(reads) > 1000 and len(writes) > 50
    l1_hits = sum(result["l1_hits"] for result in results)
    assert l1_hits > len(reads) / 4  # the L1 served, or this proved nothing
    # every worker relinked after each cut and followed both failovers
    assert all(r["connects"] >= 9 and r["rebuilds"] >= 3 for r in results), [
        (r["connects"], r["rebuilds"]) for r in results
    ]
    print(
        f"cluster chaos: {len(reads)} reads ({l1_hits} from the L1), {len(writes)} writes, "
        f"events {events}, connects {[r['connects'] for r in results]}, 0 stale"
    )


# -- the rules, no I/O ----------------------------------------------------------------
def test_the_l1_serves_by_the_oldest_link_and_the_last_topology_check() -> None:
    from cachekit.near import NearOptions
    from cachekit.near._cluster import _NodeView
    from cachekit.near._store import NearStore

    now = [100.0]
    store = NearStore(NearOptions(max_stale=1.0), clock=lambda: now[0])
    links = ClusterLinks(store, tracking=None, prefixes=["p:"], clock=lambda: now[0])
    views = {name: _NodeView(links, store, name) for name in ("a", "b", "c")}
    links._views = views  # as a rebuild leaves them (no threads here)
    links._checked = 99.0
    views["a"].confirm(99.5)
    views["b"].confirm(99.8)
    assert not store.serving()  # c has confirmed nothing: its keys may be stale
    views["c"].confirm(99.9)
    assert store.serve_until == 99.0 + 1.0  # the topology check is the oldest
    links._checked = 99.7
    views["a"].confirm(99.6)
    assert store.serve_until == 99.6 + 1.0  # a's PING is the oldest now
    token = store.begin("k")
    store.finish("k", token, b"v", None)
    assert store.lookup("k") == b"v"
    views["b"].stop_serving()  # b's link dropped: flushed, and nothing served
    assert store.lookup("k") is MISSING and len(store) == 0
    views["a"].confirm(100.0)
    views["c"].confirm(100.0)
    assert not store.serving()  # until b is back and confirmed
    views["b"].confirm(100.0)
    assert store.serving()
    gone = _NodeView(links, store, "a")  # a link a topology change closed
    serve_until = store.serve_until
    gone.confirm(200.0)
    assert store.serve_until == serve_until


def test_a_node_added_is_linked_and_its_slots_writes_reach_the_l1() -> None:
    """A new primary (no slots, so redis-py does not list it yet) is linked as soon as
    the cluster knows it; a slot moved to it keeps its keys coherent."""
    import redis

    from cachekit.testing.servers import RedisServer, _cluster_port

    if find_redis_cli() is None:
        pytest.skip("a Redis Cluster needs redis-cli (apt install redis-tools)")
    servers = ClusterServers(masters=3, node_timeout=1000)
    extra = RedisServer(
        port=_cluster_port(),
        extra_args=("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"),
    )
    a = _near(servers)
    b = Cache(servers.url, prefix=a.prefix, timeout=1.0, retry_interval=0.05)
    try:
        key = _by_node(a, servers)[servers.primaries()[0].port][0]
        a.set(key, "before")
        warm(a, key)
        links = _links(a)
        new = redis.Redis(port=extra.port)
        new.execute_command("CLUSTER", "MEET", "127.0.0.1", servers.primaries()[0].port)
        name = f"127.0.0.1:{extra.port}"
        _eventually(lambda: name in links.nodes, "the new node linked")
        assert links.caught_up(10.0)
        assert not in_l1(a, key)  # flushed when the links changed
        warm(a, key)

        def joined() -> bool:
            text = bytes(new.execute_command("CLUSTER", "INFO")).decode()  # unparsed
            return "cluster_state:ok" in text and "cluster_known_nodes:4" in text

        _eventually(joined, "the new node to join")
        # move the key's slot to the new node (as redis-cli --cluster reshard does)
        full = a.make_key(key)
        probe = RedisCluster(host="127.0.0.1", port=servers.primaries()[0].port)
        slot = probe.keyslot(full)
        source = redis.Redis(port=probe.get_node_from_key(full).port)
        probe.close()
        new_id, source_id = (
            new.execute_command("CLUSTER", "MYID"),
            source.execute_command("CLUSTER", "MYID"),
        )
        new.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", source_id)
        source.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", new_id)
        for moving in source.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 100):
            source.migrate("127.0.0.1", extra.port, moving, 0, 5000)
        for node in [*servers.primaries(), extra]:
            with redis.Redis(port=node.port) as admin:
                admin.execute_command("CLUSTER", "SETSLOT", slot, "NODE", new_id)
        _eventually(lambda: bool(b.set(key, "moved")), "a write on the new node")
        assert new.get(full) is not None  # it is there now
        source.close()
        caught_up(a)
        assert not in_l1(a, key)
        _eventually(lambda: a.get(key) == "moved", "the moved value")
        assert warm(a, key) == "moved"
        b.set(key, "again")  # reported by the new node's link
        caught_up(a)
        assert not in_l1(a, key)
        assert a.get(key) == "again"
        new.close()
    finally:
        a.close()
        b.close()
        extra.stop()
        servers.stop()
