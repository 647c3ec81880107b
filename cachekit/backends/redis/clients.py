"""What the sync and async Redis backends share: client providers, error translation.

A provider holds the client of this process (sync) or of each running event loop
(async: an asyncio client is bound to the loop it first ran on, so ``asyncio.run``
twice, or one loop per test, just works), made lazily (building a cache makes no
network call) by the ``factory`` it was given. Which client class, pool and retry
policy a factory uses (the topology: standalone, Sentinel or Cluster) is decided in one
place, :mod:`cachekit.backends.redis.topology`.
"""

from __future__ import annotations

import asyncio
import inspect
import socket
import threading
import weakref
from collections.abc import Callable
from typing import Any

import redis.exceptions

from ...exceptions import (
    BackendError,
    BackendTimeoutError,
    BackendUnavailableError,
    CacheKitError,
    ConfigurationError,
    IncrementError,
    LockError,
    LockNotOwnedError,
)

__all__ = [
    "AsyncClientProvider",
    "SyncClientProvider",
    "client_options",
    "connection_kwargs",
    "translate_error",
]


# what a Redis Cluster answers while a primary is down or its slots move (redis-py retries
# MOVED/ASK itself): the backend is unavailable for now, like a dropped connection
_MOVING = (
    redis.exceptions.ClusterDownError,
    redis.exceptions.TryAgainError,
    redis.exceptions.SlotNotCoveredError,
    redis.exceptions.MasterDownError,
)


def translate_error(exc: BaseException) -> CacheKitError:
    """The one place where redis-py's errors become cachekit's."""
    if isinstance(exc, CacheKitError):
        return exc
    if isinstance(exc, redis.exceptions.LockNotOwnedError):
        return LockNotOwnedError(str(exc))
    if isinstance(exc, redis.exceptions.LockError):
        return LockError(str(exc))
    if isinstance(exc, redis.exceptions.RedisClusterException) and (
        isinstance(exc.__cause__ or exc.__context__, (ConnectionError, OSError))
        or "cannot be connected" in str(exc)
    ):  # no startup node answers
        return BackendUnavailableError(f"redis is unavailable: {exc}")
    if isinstance(exc, _MOVING):  # a cluster or sentinel failover in progress
        return BackendUnavailableError(f"redis is failing over: {type(exc).__name__}: {exc}")
    if isinstance(exc, (redis.exceptions.TimeoutError, socket.timeout, asyncio.TimeoutError)):
        return BackendTimeoutError(f"redis did not answer in time: {exc}")
    if isinstance(exc, (redis.exceptions.ConnectionError, ConnectionError, OSError)):
        return BackendUnavailableError(f"redis is unavailable: {exc}")
    if isinstance(exc, redis.exceptions.ResponseError) and "not an integer" in str(exc):
        return IncrementError("cannot increment a value that is not an integer")
    return BackendError(f"redis error: {type(exc).__name__}: {exc}")


def client_options(socket_timeout: float | None, connect_timeout: float | None) -> dict[str, Any]:
    return {
        "socket_timeout": socket_timeout,
        "socket_connect_timeout": connect_timeout,
        "health_check_interval": 0,
        "decode_responses": False,
    }


def reconnect_on_unread(connection_class: type) -> dict[str, Any]:
    """Keyword arguments that keep a redis-py pool reconnecting a connection which holds a
    reply nobody read, before it is handed out (for clients of ``connection_class``).
    redis-py < 8 always does; 8 skips that check while maintenance notifications are on,
    and their default is "auto" (on even where the server has none: plain Redis), so the
    stale reply would answer the next command (``tests/backends/test_redis_deadlines.py``
    shows it). cachekit's own connections turn those notifications off; a client the user
    passes keeps redis-py's defaults."""
    if not any(
        "maint_notifications_config" in inspect.signature(klass.__dict__["__init__"]).parameters
        for klass in connection_class.__mro__
        if "__init__" in klass.__dict__
    ):
        return {}  # a redis-py without them: its pool checks
    from redis.maint_notifications import MaintNotificationsConfig

    return {"maint_notifications_config": MaintNotificationsConfig(enabled=False)}


def connection_kwargs(client: Any) -> dict[str, Any]:
    """The settings ``client``'s connections are made with: a standalone or Sentinel
    client's pool's, a cluster client's (sync: its nodes manager's; asyncio: its own)."""
    pool = getattr(client, "connection_pool", None)
    if pool is not None:
        return dict(getattr(pool, "connection_kwargs", None) or {})
    manager = getattr(client, "nodes_manager", None)
    kwargs = getattr(manager, "connection_kwargs", None) or getattr(
        client, "connection_kwargs", None
    )
    return dict(kwargs or {})


def _check_bytes(client: Any) -> None:
    if connection_kwargs(client).get("decode_responses"):
        raise ConfigurationError(
            "cachekit stores bytes: pass a redis client built with decode_responses=False"
        )


class SyncClientProvider:
    """The sync client: the user's own (``client``), or one ``factory`` makes on first use
    (and :meth:`close` closes)."""

    def __init__(
        self, client: Any = None, factory: Callable[[], Any] | None = None, name: str = ""
    ) -> None:
        self.name = name  # where the clients connect, when the topology says (Cluster, Sentinel)
        self._client = client
        self._factory = factory
        self._lock = threading.Lock()
        if client is not None:
            _check_bytes(client)

    def _make(self) -> Any:
        assert self._factory is not None
        return self._factory()

    def get(self) -> Any:
        client = self._client
        if client is None:
            with self._lock:
                if self._client is None:
                    self._client = self._make()
                client = self._client
        return client

    def close(self) -> None:
        client, self._client = self._client, None
        if client is not None and self._factory is not None:
            client.close()
            pool = getattr(client, "connection_pool", None)  # a cluster client has none
            if pool is not None:
                pool.disconnect()  # a pool we passed in is not closed by close()
            for sentinel in _sentinels(client):
                sentinel.close()
                sentinel.connection_pool.disconnect()


class AsyncClientProvider:
    """An asyncio client per running event loop: the user's own (``client``) serves the
    first loop; ``factory`` makes one for each other loop, closed with its loop."""

    def __init__(
        self, client: Any = None, factory: Callable[[], Any] | None = None, name: str = ""
    ) -> None:
        self.name = name  # where the clients connect, when the topology says (Cluster, Sentinel)
        self._given = client
        self._factory = factory
        self._loop: Any = None
        self._client: Any = None
        self._others: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()
        self._closers: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()
        if client is not None:
            _check_bytes(client)

    def _make(self) -> Any:
        assert self._factory is not None
        return self._factory()

    def get(self) -> Any:
        loop = asyncio.get_running_loop()
        if loop is self._loop:
            return self._client
        return self._switch(loop)

    def _switch(self, loop: Any) -> Any:
        client = self._others.get(loop)
        if client is None:
            if self._given is not None and not self._others and self._client is None:
                client = self._given  # the user's own client serves the first loop
            else:
                client = self._make()
                self._close_with_loop(loop, client)
            self._others[loop] = client
        self._loop, self._client = loop, client
        return client

    def _close_with_loop(self, loop: Any, client: Any) -> None:
        """Close ``client``'s connections when its event loop shuts down.

        asyncio has no loop-closing hook, but ``asyncio.run`` (and pytest-asyncio) end with
        ``loop.shutdown_asyncgens()``, which finalises every async generator the loop has
        seen: a started generator whose ``finally`` closes the client is such a hook.
        Without it each ``asyncio.run(cache.aget(...))`` would leak its connections.
        """

        async def closer() -> Any:
            try:
                yield
            finally:
                # only forget this client if it is still the one in use: a closer replaced
                # after aclose() must not drop the loop's new client
                if self._others.get(loop) is client:
                    del self._others[loop]
                if self._client is client:
                    self._loop = self._client = None
                await _aclose(client)

        generator = closer()
        try:
            generator.asend(None).send(None)
        except StopIteration:
            pass
        self._closers[loop] = generator

    async def close(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # pragma: no cover - close() is awaited, so a loop runs
            loop = None
        client = self._others.pop(loop, None) if loop is not None else None
        if client is not None and client is not self._given:
            await _aclose(client)
        if loop is self._loop:
            self._loop = self._client = None


def _sentinels(client: Any) -> list[Any]:
    """The clients of the sentinels a Sentinel-managed ``client`` asks (made with it)."""
    manager = getattr(getattr(client, "connection_pool", None), "sentinel_manager", None)
    return list(getattr(manager, "sentinels", None) or ())


async def _aclose(client: Any) -> None:
    if hasattr(client, "connection_pool"):
        await client.aclose(close_connection_pool=True)
        for sentinel in _sentinels(client):
            await sentinel.aclose(close_connection_pool=True)
    else:  # an asyncio RedisCluster closes its nodes' connections itself
        await client.aclose()
