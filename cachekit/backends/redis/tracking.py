"""The near cache's listening points on a Redis Cluster (the cluster backend's
``tracking()`` capability, :mod:`cachekit.backends.base`)."""

from __future__ import annotations

from typing import Any

import redis

from .clients import connection_kwargs

__all__ = ["ClusterTracking"]


_GONE = {"fail", "handshake", "noaddr"}  # CLUSTER NODES flags of a node taking no writes


class ClusterTracking:
    """Where a near cache listens on a Redis Cluster (the cluster backend's
    ``tracking()``): each node reports only the writes of its own slots, so the near cache
    keeps one invalidation link per primary. Which nodes are primaries is redis-py's
    answer and the nodes' own (``CLUSTER NODES``, parsed by redis-py); nothing here knows
    slots. Sync only: the near cache's links are threads."""

    def __init__(self, clients: Any) -> None:
        self._clients = clients
        self._made: dict[str, Any] = {}  # clients of primaries redis-py does not list

    def get(self) -> Any:
        return self._clients.get()

    def refresh(self) -> None:
        """Read the slot map again (redis-py's ``NodesManager.initialize``): a link was
        lost, or a node did not answer."""
        self._clients.get().nodes_manager.initialize()

    def primaries(self) -> dict[str, Any]:
        """``name -> client`` of every node taking writes now: the masters (failed ones
        aside) that any node redis-py knows (primaries and replicas) lists, each node's
        word on itself included (a replica just promoted knows first). Raises when a node
        does not answer: the near cache then serves nothing until one check succeeds."""
        cluster = self._clients.get()
        nodes = {node.name: node.redis_connection for node in cluster.get_nodes()}
        found: dict[str, Any] = {}
        for client in list(nodes.values()):
            seen = client.execute_command("CLUSTER NODES")  # parsed by redis-py
            here = connection_kwargs(client).get("host", "127.0.0.1")
            for address, node in seen.items():
                flags = set(str(node["flags"]).split(","))
                if "master" not in flags or flags & _GONE:
                    continue
                host, _, port = str(address).rpartition(":")
                name = f"{host or here}:{port}"
                found[name] = nodes.get(name) or self._client_of(name, client)
        return found

    def _client_of(self, name: str, like: Any) -> Any:
        """A client of a primary redis-py does not list yet (no slots: a node just added),
        with the settings of ``like`` (a node's client)."""
        client = self._made.get(name)
        if client is None:
            host, _, port = name.rpartition(":")
            pool = like.connection_pool
            kwargs = {**pool.connection_kwargs, "host": host, "port": int(port)}
            made = redis.ConnectionPool(connection_class=pool.connection_class, **kwargs)
            client = redis.Redis(connection_pool=made)
            self._made[name] = client
        return client
