"""Redis topology: the one place that chooses client classes, pools and retry policy.

It builds the sync/async Redis backend pair from a URL or an existing client: standalone
``redis://``, ``rediss://``, ``unix://`` and in-process ``fakeredis://`` today; Sentinel
and Cluster (issue 9) are one more branch here, giving the providers of
:mod:`cachekit.backends.redis.clients` their factories (features never see a client class).

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
from urllib.parse import urlsplit

import redis
import redis.asyncio
import redis.connection
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.retry import Retry

from ...exceptions import ConfigurationError
from ._async_backend import AsyncRedisBackend
from ._sync_backend import RedisBackend
from .clients import AsyncClientProvider, SyncClientProvider, client_options

__all__ = ["backends_for_client", "backends_for_url"]

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
    pool_class = redis.asyncio.ConnectionPool if want_async else redis.ConnectionPool
    return pool_class(connection_class=target, max_connections=pool.max_connections, **kwargs)


def _sync_twin(client: Any) -> Callable[[], Any]:
    return lambda: redis.Redis(connection_pool=_twin_pool(client, want_async=False))


def _async_twin(client: Any) -> Callable[[], Any]:
    return lambda: redis.asyncio.Redis(connection_pool=_twin_pool(client, want_async=True))


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


def backends_for_url(
    url: str, timeout: float | None, connect_timeout: float | None
) -> tuple[RedisBackend, AsyncRedisBackend]:
    parts = urlsplit(url)
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
    return (
        RedisBackend(
            SyncClientProvider(factory=lambda: redis.Redis.from_url(url, retry=_retry(), **options))
        ),
        AsyncRedisBackend(
            AsyncClientProvider(
                factory=lambda: redis.asyncio.Redis.from_url(url, retry=_async_retry(), **options)
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
        "client= takes a redis.Redis or redis.asyncio.Redis client, "
        f"not {type(client).__qualname__}"
    )
