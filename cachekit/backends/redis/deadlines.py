"""The socket timeout of the connections cachekit makes, kept without a cost per command.

Sync: Python enforces a socket's timeout by polling it before every ``recv`` and ``send``
(a system call each: ~0.7 us of a 21 us ``GET``, pinned). A connection of
:func:`kernel_timed` classes sets the same timeout in the kernel instead
(``SO_RCVTIMEO``/``SO_SNDTIMEO`` on a blocking socket): a ``recv`` or ``send`` that waits
longer fails with ``EAGAIN``, which the connection raises as redis-py's own
:class:`redis.exceptions.TimeoutError`, as before (and not as the ``ConnectionError``
redis-py would make of it, which its retry would retry: a frozen Redis would cost twice
the timeout). TLS connections keep Python's timeout (a TLS record may need several reads).

Asyncio: redis-py's asyncio connection enforces ``socket_timeout`` by putting every reply's read
under an asyncio timeout (a timer handle scheduled on the loop and cancelled) and, on
Python 3.11, every write under ``asyncio.wait_for`` (a new task). Measured pinned on one
CPU, that is about 17 us per ``GET``: a third of the round trip itself, and most of what
an async hit costs beyond the floor (``benchmarks/bench_hit_path.py``).

A connection of :func:`watched` classes keeps the same deadline another way. It notes when
a command began (one ``monotonic()``, cleared when it ends); one thread per process looks
every quarter of the shortest deadline at the connections with a command in flight, and
one past its deadline has its transport aborted from its own event loop
(``call_soon_threadsafe``). The write or read waiting on it fails at once, and the
connection raises redis-py's own :class:`redis.exceptions.TimeoutError`, as before: a
frozen Redis is given up on after the deadline (up to a quarter of it later), the
application is never held. A read with a timeout of its caller's own (pub/sub
``get_message(timeout=...)``) keeps redis-py's timer, as does connecting
(``socket_connect_timeout``).

Both flavours also answer the pool's question "has this connection unread data?" (asked
before every command; yes: the pool reconnects) by looking, not by reading. With the
hiredis parser, redis-py 7's asyncio check is a read under a zero timeout (two turns of the
loop per command), its sync check a ``recv`` on a socket switched to non-blocking and back
(three system calls and an exception); redis-py 7 and 8 both miss a reply still in the
socket, which then answers the next command. Here: hiredis's buffer, the stream's
(asyncio), then one ``poll`` with no wait; redis-py's own check runs when the socket has
something (sync), and decides for other parsers and TLS. (redis-py 8 also ignores the answer
while maintenance notifications are on: see
:func:`cachekit.backends.redis.clients.reconnect_on_unread`.)

Only connections cachekit constructs are changed (a URL's, a Sentinel's primary's, the
twins of a user's client; asyncio: a cluster's too, while a sync cluster's nodes keep
Python's timeout, their clients being made inside redis-py); a client the user passes
keeps its own behaviour.
"""

from __future__ import annotations

import asyncio
import os
import select
import socket
import struct
import sys
import threading
import time
import weakref
from time import monotonic
from typing import Any

import redis.connection
import redis.exceptions

__all__ = ["kernel_timed", "time_in_kernel", "watch_client", "watched"]

_HIREDIS_PARSER: Any = None  # redis-py's hiredis parser, whose "has this connection data?"
_NOT_ENOUGH_DATA: Any = None  # check waits (see _Watched.can_read_destructive)
_SYNC_HIREDIS_PARSER: Any = None  # and the sync one's switches the socket's mode twice
try:
    from redis._parsers import hiredis as _hiredis

    _HIREDIS_PARSER, _NOT_ENOUGH_DATA = _hiredis._AsyncHiredisParser, _hiredis.NOT_ENOUGH_DATA
    _SYNC_HIREDIS_PARSER = _hiredis._HiredisParser
except (ImportError, AttributeError):  # another redis-py: its own check, unchanged
    pass


class _Watch:
    """The process's deadline thread and the connections it watches."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._connections: weakref.WeakSet[Any] = weakref.WeakSet()
        self._interval = 1.0
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()

    def add(self, connection: Any) -> None:
        with self._lock:
            self._connections.add(connection)
            self._interval = min(self._interval, max(0.005, connection._deadline / 4))
            if self._thread is None or self._pid != os.getpid():
                self._pid = os.getpid()
                self._thread = threading.Thread(
                    target=self._run, name="cachekit-redis-deadlines", daemon=True
                )
                self._thread.start()

    def _run(self) -> None:
        while True:
            time.sleep(self._interval)
            if not self._check():  # every watched connection is gone: so is the thread
                return

    def _check(self) -> bool:
        """Expire the commands past their deadline; False (the thread to end) when no
        connection is left. Its own frame: the connections it held are let go on return,
        not kept alive through the next sleep (they would never be collected)."""
        with self._lock:
            connections = list(self._connections)
            if not connections:
                self._thread = None
                self._interval = 1.0
                return False
        now = monotonic()
        for connection in connections:
            since = connection._since
            if since and now - since > connection._deadline:
                try:
                    connection._loop.call_soon_threadsafe(connection._expire, since)
                except RuntimeError:  # its event loop is closed
                    pass
        return True

    def after_fork(self) -> None:
        """In a forked child: the parent's thread (and maybe its held lock) is not ours."""
        self._lock = threading.Lock()
        self._thread = None


_WATCH = _Watch()
os.register_at_fork(after_in_child=_WATCH.after_fork)


class _Watched:
    """Mixed in before a redis-py asyncio connection class (see the module's text)."""

    _since = 0.0  # when the command in flight began (monotonic); 0.0: none in flight
    _expired = False  # the watch aborted this connection's transport
    _loop: Any = None
    _deadline: float | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # redis-py's timers off (socket_connect_timeout was already derived from it)
        connection: Any = self
        self._deadline, connection.socket_timeout = connection.socket_timeout, None

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        if self._deadline is None:
            return await super().send_packed_command(command, check_health)  # type: ignore[misc, no-any-return]
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # its first command (or its first on another loop)
            if self._loop is None:
                _WATCH.add(self)
            self._loop = loop
        self._expired = False
        self._since = monotonic()
        try:
            await super().send_packed_command(command, check_health)  # type: ignore[misc]
        except redis.exceptions.ConnectionError:
            if self._expired:
                raise redis.exceptions.TimeoutError("Timeout writing to socket") from None
            raise
        finally:
            self._since = 0.0

    async def read_response(
        self, disable_decoding: bool = False, timeout: float | None = None, **kwargs: Any
    ) -> Any:
        if timeout is not None or self._deadline is None:  # the caller's own timeout
            return await super().read_response(  # type: ignore[misc]
                disable_decoding=disable_decoding, timeout=timeout, **kwargs
            )
        self._since = monotonic()
        try:
            return await super().read_response(  # type: ignore[misc]
                disable_decoding=disable_decoding, timeout=None, **kwargs
            )
        except redis.exceptions.ConnectionError:
            if self._expired:
                raise redis.exceptions.TimeoutError(
                    f"Timeout reading from {self._host_error()}"  # type: ignore[attr-defined]
                ) from None
            raise
        finally:
            self._since = 0.0

    async def can_read_destructive(self) -> bool:
        """Whether the connection holds unread data: redis-py < 8's pool asks before it
        hands the connection out, and reconnects if so (see :meth:`_unread`)."""
        return await self._unread(super().can_read_destructive)  # type: ignore[misc]

    async def can_read(self) -> bool:
        """The same question as redis-py >= 8's pool asks it."""
        return await self._unread(super().can_read)  # type: ignore[misc]

    async def _unread(self, theirs: Any) -> bool:
        """A reply left unread must never answer the next command. With the hiredis
        parser, redis-py < 8 finds out by a read under a zero timeout (two turns of the
        event loop per command), and both it and redis-py 8 miss a reply still in the
        socket, which then answers the next command (a test shows it). The places such
        data can be are looked at instead: hiredis's buffer, the stream's, and the socket
        (``poll``, no wait). On another parser, or a transport whose socket cannot tell
        (TLS), redis-py's own check (``theirs``) decides."""
        parser: Any = getattr(self, "_parser", None)
        stream: Any = getattr(parser, "_stream", None)
        writer = getattr(self, "_writer", None)
        poll = None
        if (
            type(parser) is _HIREDIS_PARSER
            and parser._connected
            and stream is not None
            and writer is not None
        ):
            poll = self._poll_for(writer.transport)
        if poll is None:
            return bool(await theirs())
        reader = parser._reader
        has_data = getattr(reader, "has_data", None)  # hiredis >= 2.1: without reading
        if has_data is not None:
            if has_data():
                return True
        elif reader.gets() is not _NOT_ENOUGH_DATA:  # (redis-py < 8 reads it too)
            return True
        # read off the socket by the loop already, or still in it (or its end, an error)
        return bool(stream._buffer or stream.at_eof() or poll.poll(0))

    _polled: Any = None  # the transport whose socket _poll watches
    _poll: Any = None

    def _poll_for(self, transport: Any) -> Any:
        """A ``poll`` object on the transport's socket (made once per transport); None
        where the socket cannot tell (TLS: its bytes are records, not the data)."""
        if transport is not self._polled:
            sock = transport.get_extra_info("socket")
            if sock is None or transport.get_extra_info("sslcontext") is not None:
                return None
            poll = select.poll()
            poll.register(sock.fileno(), select.POLLIN)
            self._poll, self._polled = poll, transport
        return self._poll

    def _expire(self, since: float) -> None:
        """On the connection's loop: abort the transport if the same command is still in
        flight (the read or write waiting on it fails at once)."""
        writer = getattr(self, "_writer", None)
        if self._since == since and writer is not None:
            self._expired = True
            writer.transport.abort()


_classes: dict[tuple[type, type], type] = {}


def _mixed(mixin: type, connection_class: type) -> type:
    """``connection_class`` with ``mixin`` in front, under the same name (redis-py finds a
    class's other-flavour twin by name), made once."""
    if issubclass(connection_class, mixin):
        return connection_class
    made = _classes.get((mixin, connection_class))
    if made is None:
        made = _classes[mixin, connection_class] = type(
            connection_class.__name__, (mixin, connection_class), {}
        )
    return made


def watched(connection_class: type) -> type:
    """``connection_class`` with its socket timeout kept by the deadline thread."""
    return _mixed(_Watched, connection_class)


def watch_client(client: Any) -> Any:
    """``client`` (a redis-py asyncio ``Redis``, Sentinel primary or ``RedisCluster`` that
    has made no connection yet) with its connections watched; returns it."""
    pool = getattr(client, "connection_pool", None)
    if pool is not None:
        pool.connection_class = watched(pool.connection_class)
        return client
    kwargs = getattr(client, "connection_kwargs", None)  # a cluster: its nodes' settings
    if isinstance(kwargs, dict) and "connection_class" in kwargs:
        kwargs["connection_class"] = watched(kwargs["connection_class"])
        for node in getattr(client, "startup_nodes", ()):
            node.connection_class = watched(node.connection_class)
    return client


# -- sync: the timeout in the kernel ---------------------------------------------------------
def _timed_out(exc: BaseException) -> bool:
    """Whether redis-py's ConnectionError ``exc`` is a kernel timeout's ``EAGAIN``."""
    cause = exc.__cause__ or exc.__context__
    return isinstance(cause, BlockingIOError)


class _KernelTimed:
    """Mixed in before a redis-py sync connection class (see the module's text)."""

    _deadline: float | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        connection: Any = self  # Python's timeout off (socket_connect_timeout is derived)
        self._deadline, connection.socket_timeout = connection.socket_timeout, None

    def _connect(self) -> Any:
        sock = super()._connect()  # type: ignore[misc]
        if self._deadline:
            seconds, fraction = divmod(self._deadline, 1.0)
            timeval = struct.pack("ll", int(seconds), int(fraction * 1_000_000) or 1)
            sock.settimeout(None)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, timeval)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, timeval)
        return sock

    _polled: Any = None  # the socket _poll watches
    _poll: Any = None

    def can_read(self, timeout: float = 0) -> bool:
        """Whether the connection holds unread data (the pool asks before it hands the
        connection out). redis-py < 8's hiredis parser makes the socket non-blocking for a
        ``recv``, and blocking again: three system calls and an exception per command. One
        ``poll`` with no wait instead (after hiredis's buffer), and redis-py's own read
        only when it says the socket has something. redis-py >= 8 polls as well: its own
        check, unchanged."""
        parser: Any = getattr(self, "_parser", None)
        sock = getattr(self, "_sock", None)
        if (
            timeout
            or sock is None
            or type(parser) is not _SYNC_HIREDIS_PARSER
            or parser._reader is None
            or not hasattr(parser, "_next_response")  # redis-py >= 8 polls itself
        ):
            return super().can_read(timeout)  # type: ignore[misc, no-any-return]
        if parser._next_response is _NOT_ENOUGH_DATA:  # hiredis's buffer, kept as redis-py does
            parser._next_response = parser._reader.gets()
        if parser._next_response is not _NOT_ENOUGH_DATA:
            return True
        if sock is not self._polled:
            poll = select.poll()
            poll.register(sock.fileno(), select.POLLIN)
            self._poll, self._polled = poll, sock
        if self._poll.poll(0):  # bytes, an end or an error: redis-py's read decides
            return super().can_read(timeout)  # type: ignore[misc, no-any-return]
        return False

    def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        try:
            super().send_packed_command(command, check_health)  # type: ignore[misc]
        except redis.exceptions.ConnectionError as exc:
            if _timed_out(exc):
                self.disconnect()  # type: ignore[attr-defined]
                raise redis.exceptions.TimeoutError("Timeout writing to socket") from None
            raise

    def read_response(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().read_response(*args, **kwargs)  # type: ignore[misc]
        except redis.exceptions.ConnectionError as exc:
            if _timed_out(exc):
                self.disconnect()  # type: ignore[attr-defined]
                raise redis.exceptions.TimeoutError("Timeout reading from socket") from None
            raise


# where SO_RCVTIMEO takes a struct timeval of two longs (Windows: a DWORD of milliseconds)
_KERNEL_TIMEOUTS = sys.platform.startswith("linux") or sys.platform == "darwin"


def kernel_timed(connection_class: type) -> type:
    """``connection_class`` with its socket timeout kept by the kernel (a TLS class as it
    is)."""
    if not _KERNEL_TIMEOUTS or issubclass(connection_class, redis.connection.SSLConnection):
        return connection_class
    return _mixed(_KernelTimed, connection_class)


def time_in_kernel(client: Any) -> Any:
    """``client`` (a redis-py sync ``Redis`` or Sentinel primary that has made no connection
    yet) with its connections' timeout kept by the kernel; returns it. A cluster client as
    it is (its nodes' clients are made inside redis-py)."""
    pool = getattr(client, "connection_pool", None)
    if pool is not None:
        pool.connection_class = kernel_timed(pool.connection_class)
    return client
