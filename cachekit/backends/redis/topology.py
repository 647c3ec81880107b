"""Redis topology: the one place that chooses client classes, pools and retry policy.

It builds the sync/async Redis backend pair from a URL or an existing client: standalone
``redis://``, ``rediss://``, ``unix://``, in-process ``fakeredis://``, Redis Cluster
(``redis+cluster://h:p,h:p/``, or a ``RedisCluster`` client: redis-py's, sync or asyncio)
and Sentinel (``redis+sentinel://h:p[,h:p]/service/db``, or a ``Sentinel.master_for()``
client), giving the providers of :mod:`cachekit.backends.redis.clients` their factories
(features never see a client class). The topology itself (slots, ``MOVED``, failover
discovery) is redis-py's: cachekit only chooses and wires its clients.

Clients get short timeouts and at most one immediate retry on a dropped connection,
never on a timeout: a Redis that does not answer must cost one timeout, not four with
backoff in between.
"""

from __future__ import annotations

import importlib
import inspect
import threading
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote, urlsplit

import redis
import redis.asyncio
import redis.asyncio.connection
import redis.connection
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.retry import Retry

from ...exceptions import ConfigurationError
from ._async_backend import AsyncRedisBackend, AsyncRedisClusterBackend
from ._sync_backend import RedisBackend, RedisClusterBackend
from .clients import (
    AsyncClientProvider,
    SyncClientProvider,
    client_options,
    connection_kwargs,
    reconnect_on_unread,
)
from .deadlines import time_in_kernel, watch_client

__all__ = ["CLUSTER_SCHEME", "SENTINEL_SCHEME", "backends_for_client", "backends_for_url"]

CLUSTER_SCHEME = "redis+cluster"
SENTINEL_SCHEME = "redis+sentinel"

_fake_servers: dict[str, Any] = {}
_fake_lock = threading.Lock()


_FAKEREDIS_EXTRA = "pip install 'cachekit[fakeredis]'"


def _retry() -> Retry:
    return Retry(NoBackoff(), 1, supported_errors=(redis.exceptions.ConnectionError,))


def _async_retry() -> AsyncRetry:
    return AsyncRetry(NoBackoff(), 1, supported_errors=(redis.exceptions.ConnectionError,))


def _accepted(cls: type) -> set[str]:
    names: set[str] = set()
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is not None:
            names.update(
                p.name
                for p in inspect.signature(init).parameters.values()
                if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)
            )
    return names - {"self"}


def _twin_pool(client: Any, want_async: bool) -> Any:
    """A connection pool of the other flavour (sync/async) with ``client``'s settings."""
    import redis.asyncio.connection as aconn
    import redis.connection as sconn

    pool = client.connection_pool
    source = pool.connection_class
    name = source.__name__
    target_module = aconn if want_async else sconn
    target = getattr(target_module, name, None)
    if not isinstance(target, type):
        raise ConfigurationError(
            f"cannot derive a {'asyncio' if want_async else 'sync'} client from {name}; "
            "pass both client= and a URL, or use Cache(url)"
        )
    accepted = _accepted(target)
    kwargs = {k: v for k, v in pool.connection_kwargs.items() if k in accepted}
    kwargs["retry"] = _async_retry() if want_async else _retry()
    kwargs.update(reconnect_on_unread(target))  # the twin is cachekit's, not the user's
    pool_class = redis.asyncio.ConnectionPool if want_async else redis.ConnectionPool
    return pool_class(connection_class=target, max_connections=pool.max_connections, **kwargs)


def _sync_twin(client: Any) -> Callable[[], Any]:
    return lambda: time_in_kernel(redis.Redis(connection_pool=_twin_pool(client, want_async=False)))


def _async_twin(client: Any) -> Callable[[], Any]:
    return lambda: watch_client(
        redis.asyncio.Redis(connection_pool=_twin_pool(client, want_async=True))
    )


def _fakeredis() -> Any:
    """fakeredis, with the Lua scripting cachekit needs (tags, locks, stampede and
    write-behind run scripts). Without it fakeredis answers EVAL with an error, so tags
    would be silently wrong and write-behind would retry forever: refuse at construction."""
    try:
        import fakeredis
    except ImportError as exc:
        raise ImportError(f"fakeredis:// needs fakeredis: {_FAKEREDIS_EXTRA}") from exc
    if not _fakeredis_has_lua():
        raise ImportError(
            "fakeredis is installed without Lua scripting (the 'lupa' package), which "
            f"cachekit's tags, locks and write-behind need: {_FAKEREDIS_EXTRA}"
        )
    return fakeredis


def _fakeredis_has_lua() -> bool:
    try:
        importlib.import_module("lupa")  # what fakeredis runs scripts with
        from fakeredis.commands_mixins import ScriptingCommandsMixin
    except ImportError:
        return False
    # fakeredis puts a stub without the commands in place when lupa failed to import
    return hasattr(ScriptingCommandsMixin, "eval")


def _addresses(url: str, netloc: str) -> tuple[dict[str, str], list[tuple[str, int]]]:
    """``user:password@h:p,h:p`` as credentials and (host, port) pairs."""
    credentials: dict[str, str] = {}
    if "@" in netloc:
        userinfo, netloc = netloc.rsplit("@", 1)
        user, _, password = userinfo.partition(":")
        if user:
            credentials["username"] = unquote(user)
        if password:
            credentials["password"] = unquote(password)
    addresses: list[tuple[str, int]] = []
    for part in netloc.split(","):
        host, _, port = part.strip().rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigurationError(f"bad redis URL {url!r}: {part!r} is not host:port")
        addresses.append((host.strip("[]"), int(port)))
    return credentials, addresses


def _name(kind: str, addresses: list[tuple[str, int]], tail: str = "") -> str:
    return f"{kind}:" + ",".join(sorted(f"{h}:{p}" for h, p in addresses)) + tail


def _cluster_pair(
    addresses: list[tuple[str, int]],
    sync_options: dict[str, Any],
    async_options: dict[str, Any],
    given: Any = None,
) -> tuple[RedisBackend, AsyncRedisBackend]:
    """The backends over ``RedisCluster`` clients of the startup nodes ``addresses``
    (``given``: the user's own client, serving its flavour)."""
    acluster: Any = importlib.import_module("redis.asyncio.cluster")
    cluster: Any = importlib.import_module("redis.cluster")
    accepted = _accepted(acluster.RedisCluster)
    async_options = {k: v for k, v in async_options.items() if k in accepted}

    def make_sync() -> Any:
        return cluster.RedisCluster(
            startup_nodes=[cluster.ClusterNode(h, p) for h, p in addresses],
            retry=_retry(),
            **sync_options,
        )

    def make_async() -> Any:
        return watch_client(
            acluster.RedisCluster(
                startup_nodes=[acluster.ClusterNode(h, p) for h, p in addresses],
                retry=_async_retry(),
                **async_options,
            )
        )

    return _pair(
        RedisClusterBackend, AsyncRedisClusterBackend, make_sync, make_async,
        _name("cluster", addresses), given,
    )  # fmt: skip


def _sentinel_pair(
    addresses: list[tuple[str, int]],
    service: str,
    sync_options: dict[str, Any],
    async_options: dict[str, Any],
    asking: dict[str, Any],
    given: Any = None,
) -> tuple[RedisBackend, AsyncRedisBackend]:
    """The backends over Sentinel-managed clients of ``service``'s primary, found by the
    sentinels ``addresses`` (asked with ``asking``: their own connection settings)."""
    asentinel: Any = importlib.import_module("redis.asyncio.sentinel")
    sentinel: Any = importlib.import_module("redis.sentinel")

    sync_options = {**reconnect_on_unread(redis.connection.Connection), **sync_options}
    async_options = {**reconnect_on_unread(redis.asyncio.connection.Connection), **async_options}

    def make_sync() -> Any:
        return time_in_kernel(
            sentinel.Sentinel(addresses, sentinel_kwargs=dict(asking)).master_for(
                service, retry=_retry(), **sync_options
            )
        )

    def make_async() -> Any:
        return watch_client(
            asentinel.Sentinel(addresses, sentinel_kwargs=dict(asking)).master_for(
                service, retry=_async_retry(), **async_options
            )
        )

    db = sync_options.get("db", 0)
    name = _name("sentinel", addresses, f"/{service}/{db}")
    return _pair(RedisBackend, AsyncRedisBackend, make_sync, make_async, name, given)


def _pair(
    sync_class: Any,
    async_class: Any,
    make_sync: Callable[[], Any],
    make_async: Callable[[], Any],
    name: str,
    given: Any,
) -> tuple[RedisBackend, AsyncRedisBackend]:
    """The sync/async backends; the user's ``given`` client serves its own flavour (sync,
    or the first event loop), the factories make the rest."""
    acluster: Any = importlib.import_module("redis.asyncio.cluster")
    if given is not None and isinstance(given, (redis.asyncio.Redis, acluster.RedisCluster)):
        return (
            sync_class(SyncClientProvider(factory=make_sync, name=name)),
            async_class(AsyncClientProvider(client=given, factory=make_async, name=name)),
        )
    return (
        sync_class(
            SyncClientProvider(client=given, name=name)
            if given is not None
            else SyncClientProvider(factory=make_sync, name=name)
        ),
        async_class(AsyncClientProvider(factory=make_async, name=name)),
    )


def _topology_url(
    url: str, timeout: float | None, connect_timeout: float | None
) -> tuple[RedisBackend, AsyncRedisBackend]:
    """A ``redis+cluster://`` or ``redis+sentinel://`` URL's backends."""
    parts = urlsplit(url)
    if parts.query:
        raise ConfigurationError(
            f"bad redis URL {url!r}: {parts.scheme}:// takes only cachekit's options "
            "in its query string"
        )
    credentials, addresses = _addresses(url, parts.netloc)
    options = {
        **client_options(timeout, connect_timeout if connect_timeout is not None else timeout),
        **credentials,
    }
    path = [p for p in parts.path.split("/") if p]
    if parts.scheme == CLUSTER_SCHEME:
        if path:
            raise ConfigurationError(
                f"bad redis URL {url!r}: a cluster has one database (no /db in the URL)"
            )
        return _cluster_pair(addresses, options, options)
    if not path or len(path) > 2 or (len(path) == 2 and not path[1].isdigit()):
        raise ConfigurationError(
            f"bad redis URL {url!r}: {SENTINEL_SCHEME}://host:port[,host:port]/service[/db]"
        )
    if len(path) == 2:
        options["db"] = int(path[1])
    # the sentinels are asked with the same short timeouts (no credentials: a sentinel's
    # password is not the primary's)
    asking = {k: options[k] for k in ("socket_timeout", "socket_connect_timeout")}
    return _sentinel_pair(addresses, unquote(path[0]), options, options, asking)


def backends_for_url(
    url: str, timeout: float | None, connect_timeout: float | None
) -> tuple[RedisBackend, AsyncRedisBackend]:
    parts = urlsplit(url)
    if parts.scheme in (CLUSTER_SCHEME, SENTINEL_SCHEME):
        return _topology_url(url, timeout, connect_timeout)
    if parts.scheme == "fakeredis":
        fakeredis = _fakeredis()
        name = parts.netloc + parts.path
        with _fake_lock:
            if name and name in _fake_servers:
                server = _fake_servers[name]
            else:
                server = fakeredis.FakeServer()
                if name:  # fakeredis://name is shared in this process; fakeredis:// is not
                    _fake_servers[name] = server
        sync = fakeredis.FakeRedis(server=server)
        return (
            RedisBackend(SyncClientProvider(client=sync)),
            AsyncRedisBackend(
                AsyncClientProvider(factory=lambda: fakeredis.FakeAsyncRedis(server=server))
            ),
        )
    try:
        redis.connection.parse_url(url)  # type: ignore[no-untyped-call]  # fail here, not later
    except ValueError as exc:
        raise ConfigurationError(f"bad redis URL {url!r}: {exc}") from None
    options = client_options(timeout, connect_timeout if connect_timeout is not None else timeout)
    query = dict(p.split("=", 1) for p in parts.query.split("&") if "=" in p)
    for name in ("socket_timeout", "socket_connect_timeout"):
        if name in query:  # a timeout in the URL wins over the default
            options.pop(name, None)
    sync_options = {**reconnect_on_unread(redis.connection.Connection), **options}
    async_options = {**reconnect_on_unread(redis.asyncio.connection.Connection), **options}
    return (
        RedisBackend(
            SyncClientProvider(
                factory=lambda: time_in_kernel(
                    redis.Redis.from_url(url, retry=_retry(), **sync_options)
                )
            )
        ),
        AsyncRedisBackend(
            AsyncClientProvider(
                factory=lambda: watch_client(
                    redis.asyncio.Redis.from_url(url, retry=_async_retry(), **async_options)
                )
            )
        ),
    )


def backends_for_client(
    client: Any, timeout: float | None, connect_timeout: float | None
) -> tuple[RedisBackend, AsyncRedisBackend]:
    module = type(client).__module__
    if module.startswith("fakeredis"):
        fakeredis = _fakeredis()
        kwargs = client.connection_pool.connection_kwargs
        where = (
            {"server": kwargs["server"]}
            if kwargs.get("server") is not None
            else {"host": kwargs.get("host"), "port": kwargs.get("port", 6379)}
        )
        if isinstance(client, redis.asyncio.Redis):
            return (
                RedisBackend(SyncClientProvider(client=fakeredis.FakeRedis(**where))),
                AsyncRedisBackend(
                    AsyncClientProvider(
                        client=client, factory=lambda: fakeredis.FakeAsyncRedis(**where)
                    )
                ),
            )
        return (
            RedisBackend(SyncClientProvider(client=client)),
            AsyncRedisBackend(
                AsyncClientProvider(factory=lambda: fakeredis.FakeAsyncRedis(**where))
            ),
        )
    topology = _topology_client(client)
    if topology is not None:
        return topology
    if isinstance(client, redis.asyncio.Redis):
        return (
            RedisBackend(SyncClientProvider(factory=_sync_twin(client))),
            AsyncRedisBackend(AsyncClientProvider(client=client, factory=_async_twin(client))),
        )
    if isinstance(client, redis.Redis):
        return (
            RedisBackend(SyncClientProvider(client=client)),
            AsyncRedisBackend(AsyncClientProvider(factory=_async_twin(client))),
        )
    raise ConfigurationError(
        "client= takes a redis.Redis, redis.asyncio.Redis, RedisCluster or "
        f"redis.asyncio.RedisCluster client, not {type(client).__qualname__}"
    )


def _twin_options(client: Any, target: type) -> dict[str, Any]:
    """``client``'s connection settings that ``target`` (the other flavour) takes."""
    accepted = _accepted(target) | _accepted(redis.connection.Connection)
    kwargs = connection_kwargs(client)
    drop = {"host", "port", "retry", "connection_pool", "connection_class", "redis_connect_func"}
    return {k: v for k, v in kwargs.items() if k in accepted and k not in drop}


def _topology_client(client: Any) -> tuple[RedisBackend, AsyncRedisBackend] | None:
    """The backends of a user's ``RedisCluster`` or Sentinel-managed client (sync or
    asyncio), or None: the twins connect to the same startup nodes / sentinels with the
    client's connection settings."""
    acluster: Any = importlib.import_module("redis.asyncio.cluster")
    asentinel: Any = importlib.import_module("redis.asyncio.sentinel")
    cluster: Any = importlib.import_module("redis.cluster")
    sentinel: Any = importlib.import_module("redis.sentinel")
    sync_options = _twin_options(client, redis.Redis)
    async_options = _twin_options(client, redis.asyncio.Redis)
    if isinstance(client, (cluster.RedisCluster, acluster.RedisCluster)):
        addresses = [(n.host, n.port) for n in client.nodes_manager.startup_nodes.values()]
        return _cluster_pair(addresses, sync_options, async_options, given=client)
    pool = getattr(client, "connection_pool", None)
    if not isinstance(pool, (sentinel.SentinelConnectionPool, asentinel.SentinelConnectionPool)):
        return None
    addresses = [
        (s.connection_pool.connection_kwargs["host"], s.connection_pool.connection_kwargs["port"])
        for s in pool.sentinel_manager.sentinels
    ]
    asking = dict(pool.sentinel_manager.sentinel_kwargs or {})
    return _sentinel_pair(
        addresses, pool.service_name, sync_options, async_options, asking, given=client
    )
