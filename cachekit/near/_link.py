"""The invalidation link: one Redis connection, one thread, per near layer.

The connection speaks RESP2 and does, in order::

    CLIENT ID                                     -> its own id
    CLIENT TRACKING on REDIRECT <id> BCAST PREFIX <namespace> ...
    SUBSCRIBE __redis__:invalidate

Broadcast tracking makes Redis tell this connection about every change of a key under the
namespace prefixes, whoever made it: other processes, our own writes, Lua scripts (tags,
leases), expiry, eviction, ``FLUSHDB`` (a null key list: flush). Tracking is redirected to
the connection itself, so the one socket that carries the invalidations is also the one
whose loss turns tracking off: the link cannot stop notifying without the thread seeing
its connection fail. (redis-py's own client-side cache needs RESP3 and Redis 7.4 and is
sync-only; this works from Redis 6 on, for sync and async callers alike, since the L1 is
shared by threads and event loops.)

Health: every ``ping_interval`` (``max_stale / 4``) and after each fence the thread sends a
``PING`` on the subscribed connection; the answer comes after every invalidation sent
before it, and confirms the L1 (:meth:`NearStore.confirm`). A ``PING`` unanswered for
``max_stale`` or an error drops the connection: the L1 is flushed and serves nothing until
a new connection is tracking and confirmed (retried every ``retry_interval``).
"""

from __future__ import annotations

import collections
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from ._thread import ProcessThread

__all__ = ["InvalidationLink", "LinkStore"]

logger = logging.getLogger(__name__)

CHANNEL = b"__redis__:invalidate"


class LinkStore(Protocol):
    """What a link does to the L1: a :class:`~._store.NearStore`, or on a cluster one
    node's view of it (:mod:`._cluster`)."""

    max_stale: float

    def invalidate(self, keys: Any) -> None: ...
    def flush(self) -> None: ...
    def confirm(self, sent_at: float) -> None: ...
    def stop_serving(self) -> None: ...


class InvalidationLink:
    def __init__(
        self,
        store: LinkStore,
        connect: Callable[[], Any],
        prefixes: Sequence[str],
        *,
        retry_interval: float = 0.2,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self._connect = connect
        self.prefixes = list(dict.fromkeys(prefixes))
        self.ping_interval = store.max_stale / 4
        self.retry_interval = retry_interval
        self._clock = clock
        self._lock = threading.Lock()  # start/stop, and sends on the connection
        self._worker = ProcessThread(self._run, "cachekit-near-invalidations")
        self._closed = threading.Event()
        self._conn: Any = None
        self._pings: collections.deque[float] = collections.deque()
        self._answered = threading.Condition()
        self.confirmed = -float("inf")  # when the last answered PING was sent
        self.connects = 0
        self._retracking = False  # a drop asked for by retrack(): no warning
        self.failures = 0
        self.last_error: str | None = None
        _links.add(self)

    # -- control ------------------------------------------------------------------------
    def ensure_started(self) -> None:
        """Start the thread on first use, and again in a forked child (:mod:`._thread`)."""
        self._worker.ensure(self._closed)

    def retrack(self, prefixes: Sequence[str]) -> None:
        """Track these prefixes from now on: the connection is dropped (the L1 stops
        serving and is flushed) and the thread reconnects with them."""
        with self._lock:
            self.prefixes = list(dict.fromkeys(prefixes))
            self._retracking = True
        self._drop()
        self.store.stop_serving()

    def close(self) -> None:
        self._closed.set()
        self._drop()
        self._worker.join(timeout=2.0)
        self.store.stop_serving()

    @property
    def connected(self) -> bool:
        return self._conn is not None

    def ping(self) -> None:
        """Send a PING now (its answer confirms the L1 up to now); no wait."""
        with self._lock:
            conn = self._conn
            # a connection redis-py closed after an error would reconnect in send_command:
            # a socket without tracking; the thread is about to drop it anyway
            if conn is None or getattr(conn, "_sock", True) is None:
                return
            try:
                self._pings.append(self._clock())
                conn.send_command("PING")
            except Exception:  # the thread sees the broken connection and reconnects
                pass

    def caught_up(self, timeout: float) -> bool:
        """Wait until every invalidation Redis sent before now has been applied (a PING
        sent now is answered); False after ``timeout`` seconds or with no link."""
        self.ensure_started()
        deadline = self._clock() + timeout
        with self._answered:
            while self._conn is None:  # connecting: the first PING goes out on connect
                if not self._answered.wait(max(0.0, deadline - self._clock())):
                    return False
        since = self._clock()
        self.ping()
        with self._answered:
            return self._answered.wait_for(
                lambda: self.confirmed >= since, max(0.0, deadline - self._clock())
            )

    def _answer(self, sent_at: float) -> None:
        self.store.confirm(sent_at)
        with self._answered:
            self.confirmed = sent_at
            self._answered.notify_all()

    def _after_fork(self) -> None:
        # in a forked child: the parent's connection and thread are not ours
        self._lock = threading.Lock()
        self._conn = None
        self._worker.after_fork()
        self._pings.clear()
        self._answered = threading.Condition()
        self.store.stop_serving()

    # -- the thread ---------------------------------------------------------------------
    def _run(self) -> None:
        while not self._closed.is_set():
            try:
                self._session()
            except Exception as exc:
                if self._closed.is_set():
                    break  # close() dropped the connection under the thread
                if self._retracking:
                    self._retracking = False
                    self._drop()
                    continue  # at once, with the new prefixes
                self.failures += 1
                message = f"{type(exc).__name__}: {exc}"
                if message != self.last_error:
                    logger.warning("near cache: invalidation link lost (%s); L1 off", message)
                self.last_error = message
            self._drop()
            self.store.stop_serving()
            self._closed.wait(self.retry_interval)

    def _session(self) -> None:
        conn = self._connect()
        conn.connect()
        conn.send_command("CLIENT", "ID")
        client_id = conn.read_response()
        args: list[Any] = ["CLIENT", "TRACKING", "on", "REDIRECT", client_id, "BCAST"]
        prefixes = list(self.prefixes)
        for prefix in prefixes:
            args += ["PREFIX", prefix]
        conn.send_command(*args)
        conn.read_response()
        conn.send_command("SUBSCRIBE", CHANNEL)
        conn.read_response()
        # tracking is on: anything stored before may have missed an invalidation
        self.store.flush()
        with self._lock:
            if self._closed.is_set():
                conn.disconnect()
                return
            if prefixes != self.prefixes:  # retrack() ran while this one was set up
                conn.disconnect()
                raise ConnectionError("prefixes changed while connecting")
            self._retracking = False
            self._conn = conn
            self._pings.clear()
        self.connects += 1
        with self._answered:
            self._answered.notify_all()  # callers of caught_up() waiting for a connection
        if self.last_error is not None:
            logger.info("near cache: invalidation link back")
            self.last_error = None
        self.ping()
        store, pings, clock = self.store, self._pings, self._clock
        next_ping = clock() + self.ping_interval
        while not self._closed.is_set():
            wait = next_ping - clock()
            if wait > 0 and conn.can_read(timeout=wait):
                message = conn.read_response()
                kind = message[0]
                if kind == b"message":
                    keys = message[2]
                    if keys is None:
                        store.flush()
                    else:
                        store.invalidate(keys)
                elif kind == b"pong":
                    self._answer(pings.popleft())
                continue
            if pings and clock() - pings[0] > store.max_stale:
                raise TimeoutError(f"no answer to a PING for {store.max_stale} s")
            self.ping()
            next_ping = clock() + self.ping_interval

    def _drop(self) -> None:
        with self._lock:
            conn, self._conn = self._conn, None
            self._pings.clear()
        if conn is not None:
            try:
                conn.disconnect()
            except Exception:  # pragma: no cover - closing a broken socket
                pass


_links: weakref.WeakSet[InvalidationLink] = weakref.WeakSet()


def _reset_after_fork() -> None:
    for link in list(_links):
        link._after_fork()


os.register_at_fork(after_in_child=_reset_after_fork)


def connection_factory(client: Any) -> Callable[[], Any]:
    """A maker of one dedicated RESP2 connection with ``client``'s settings (no pool: the
    link's connection must not be shared)."""
    pool = client.connection_pool
    cls = pool.connection_class
    kwargs = dict(pool.connection_kwargs)
    kwargs["protocol"] = 2
    # the link blocks in can_read() with its own deadline; reads of replies are quick
    timeout = kwargs.get("socket_timeout")
    kwargs["socket_timeout"] = max(float(timeout or 0), 1.0)

    def connect() -> Any:
        return cls(**kwargs)

    return connect
