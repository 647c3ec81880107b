"""What the sync and async Redis backends share: clients, error translation, probing.

Clients are made lazily from a URL (building a cache makes no network call) with short
timeouts and at most one immediate retry on a dropped connection, never on a timeout: a
Redis that does not answer must cost one timeout, not four with backoff in between.
An asyncio client is bound to the event loop it first ran on, so the async side keeps
one client per running loop (``asyncio.run`` twice, or one loop per test, just works).
"""

from __future__ import annotations

import asyncio
import inspect
import socket
import threading
import weakref
from collections.abc import Callable
from typing import Any

import redis
import redis.asyncio
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.retry import Retry

from ..exceptions import (
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
    "translate_error",
]


def translate_error(exc: BaseException) -> CacheKitError:
    """The one place where redis-py's errors become cachekit's."""
    if isinstance(exc, CacheKitError):
        return exc
    if isinstance(exc, redis.exceptions.LockNotOwnedError):
        return LockNotOwnedError(str(exc))
    if isinstance(exc, redis.exceptions.LockError):
        return LockError(str(exc))
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


def _retry() -> Retry:
    return Retry(NoBackoff(), 1, supported_errors=(redis.exceptions.ConnectionError,))


def _async_retry() -> AsyncRetry:
    return AsyncRetry(NoBackoff(), 1, supported_errors=(redis.exceptions.ConnectionError,))


def _check_bytes(client: Any) -> None:
    pool = getattr(client, "connection_pool", None)
    kwargs = getattr(pool, "connection_kwargs", {}) or {}
    if kwargs.get("decode_responses"):
        raise ConfigurationError(
            "cachekit stores bytes: pass a redis client built with decode_responses=False"
        )


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


class SyncClientProvider:
    def __init__(
        self,
        url: str | None = None,
        options: dict[str, Any] | None = None,
        client: Any = None,
        twin: Any = None,
    ) -> None:
        self._url = url
        self._options = options or {}
        self._client = client
        self._twin = twin  # an async client to copy settings from
        self._lock = threading.Lock()
        if client is not None:
            _check_bytes(client)

    def _make(self) -> Any:
        if self._url is not None:
            return redis.Redis.from_url(self._url, retry=_retry(), **self._options)
        return redis.Redis(connection_pool=_twin_pool(self._twin, want_async=False))

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
        if client is not None and (self._url is not None or self._twin is not None):
            client.close()
            client.connection_pool.disconnect()  # a pool we passed in is not closed by close()


class AsyncClientProvider:
    def __init__(
        self,
        url: str | None = None,
        options: dict[str, Any] | None = None,
        client: Any = None,
        twin: Any = None,
        factory: Callable[[], Any] | None = None,
    ) -> None:
        self._url = url
        self._options = options or {}
        self._given = client
        self._twin = twin  # a sync client to copy settings from
        self._factory = factory
        self._loop: Any = None
        self._client: Any = None
        self._others: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()
        self._closers: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()
        if client is not None:
            _check_bytes(client)

    def _make(self) -> Any:
        if self._factory is not None:
            return self._factory()
        if self._url is not None:
            return redis.asyncio.Redis.from_url(self._url, retry=_async_retry(), **self._options)
        source = self._twin if self._twin is not None else self._given
        return redis.asyncio.Redis(connection_pool=_twin_pool(source, want_async=True))

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
                await client.aclose(close_connection_pool=True)

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
            await client.aclose(close_connection_pool=True)
        if loop is self._loop:
            self._loop = self._client = None
