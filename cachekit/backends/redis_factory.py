"""Building the sync/async Redis backend pair from a URL or an existing client."""

from __future__ import annotations

import importlib
import threading
from typing import Any
from urllib.parse import urlsplit

import redis
import redis.asyncio
import redis.connection

from ..exceptions import ConfigurationError
from .redis import AsyncClientProvider, SyncClientProvider, client_options
from .redis_async import AsyncRedisBackend
from .redis_sync import RedisBackend

__all__ = ["backends_for_client", "backends_for_url"]

_fake_servers: dict[str, Any] = {}
_fake_lock = threading.Lock()


_FAKEREDIS_EXTRA = "pip install 'cachekit[fakeredis]'"


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
        RedisBackend(SyncClientProvider(url, options)),
        AsyncRedisBackend(AsyncClientProvider(url, options)),
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
                AsyncRedisBackend(AsyncClientProvider(client=client)),
            )
        return (
            RedisBackend(SyncClientProvider(client=client)),
            AsyncRedisBackend(
                AsyncClientProvider(factory=lambda: fakeredis.FakeAsyncRedis(**where))
            ),
        )
    if isinstance(client, redis.asyncio.Redis):
        return (
            RedisBackend(SyncClientProvider(twin=client)),
            AsyncRedisBackend(AsyncClientProvider(client=client)),
        )
    if isinstance(client, redis.Redis):
        return (
            RedisBackend(SyncClientProvider(client=client)),
            AsyncRedisBackend(AsyncClientProvider(twin=client)),
        )
    raise ConfigurationError(
        "client= takes a redis.Redis or redis.asyncio.Redis client, "
        f"not {type(client).__qualname__}"
    )
