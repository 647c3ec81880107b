"""Redis backend over redis-py's asyncio client, and its capabilities.

This file is the source: ``cachekit/backends/redis/_sync_backend.py`` is generated from it by
``scripts/unasync.py`` (CI fails when they drift). Edit here, then run the script.

With :mod:`cachekit.backends.redis.clients` (clients, error translation) this is the only code
that talks to redis-py clients: :class:`AsyncRedisBackend` is the key/value contract (the
hit path: one ``GET``, no extra frame), :class:`AsyncRedisAccess` the capabilities of
:mod:`cachekit.backends.base` (scripts, wake-ups, streams, scan) that leases, tags, the
stampede and write-behind are built on.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import redis.exceptions

from ...core.sentinel import MISSING
from ...leases.rules import (
    GUARDED_SET,
    MARK_LIFETIME,
    TOMBSTONE_HEAD,
    TOMBSTONE_LUA,
    TombstoneLog,
    new_tombstone,
    queue_revoke,
)
from ..base import CommandBatch, script_sha
from .clients import AsyncClientProvider, connection_kwargs, translate_error
from .tracking import ClusterTracking

__all__ = [
    "AsyncRedisAccess",
    "AsyncRedisBackend",
    "AsyncRedisClusterBackend",
    "AsyncRedisTombstones",
]

_SCAN_COUNT = 1000
_DELETE_BATCH = 500
_LOCK_POLL = 0.05  # redis-py's Lock polls while blocked in acquire()


def _ms(ttl: float) -> int:
    return max(1, int(ttl * 1000))


def _route(cluster: Any, key: Any) -> dict[str, Any]:
    """The node of ``key``'s slot on a cluster, named up front (``target_nodes``): for a
    command whose keys redis-py's sync cluster client cannot read itself (a script in a
    pipeline, ``XREADGROUP``), it would ask the server first (``COMMAND GETKEYS``: one or
    two more round trips per command)."""
    try:
        return {"target_nodes": cluster.nodes_manager.get_node_from_slot(cluster.keyslot(key))}
    except Exception:  # no slot map yet (a new asyncio client): redis-py finds the node
        return {}


# -- the Lua that keeps tombstones out of the contract ------------------------------------
# An invalidation leaves a tombstone in the entry's key (see cachekit.leases.rules); to
# every reader it is an absent key. GET/MGET are checked in Python (the hit path stays one
# GET); the commands whose reply would show a tombstone (EXISTS, PTTL, PEXPIRE, INCRBY,
# SET NX, UNLINK counting what it removed) run as one script each, on one key (or keys of
# one cluster slot), reading only the key's first bytes (GETRANGE: an entry's size does
# not matter; a key of another type is no tombstone).
_TOMBSTONED = f"""
local function tombstoned(key)
  local head = redis.pcall('GETRANGE', key, 0, {len(TOMBSTONE_HEAD) - 1})
  return type(head) == 'string' and head == {TOMBSTONE_LUA}
end
"""

# KEYS[1]: 1 if there is an entry (not a tombstone)
_EXISTS = (
    _TOMBSTONED
    + """
if tombstoned(KEYS[1]) then return 0 end
return redis.call('EXISTS', KEYS[1])
"""
)

# KEYS[1]: PTTL, -2 for a tombstone
_PTTL = (
    _TOMBSTONED
    + """
if tombstoned(KEYS[1]) then return -2 end
return redis.call('PTTL', KEYS[1])
"""
)

# KEYS[1], ARGV[1] PX ms or '' (persist): 1 if the entry exists (and now has that ttl)
_EXPIRE = (
    _TOMBSTONED
    + """
if tombstoned(KEYS[1]) then return 0 end
if ARGV[1] == '' then
  if redis.call('PERSIST', KEYS[1]) == 1 then return 1 end
  return redis.call('EXISTS', KEYS[1])
end
return redis.call('PEXPIRE', KEYS[1], ARGV[1])
"""
)

# KEYS[1], ARGV[1] delta, ARGV[2] PX ms for a new counter or '': the new value. A
# tombstone is no counter: the count starts at 0, as on a missing key.
_INCR = (
    _TOMBSTONED
    + """
if tombstoned(KEYS[1]) then redis.call('DEL', KEYS[1]) end
if ARGV[2] ~= '' then redis.call('SET', KEYS[1], '0', 'PX', ARGV[2], 'NX') end
return redis.call('INCRBY', KEYS[1], ARGV[1])
"""
)

# KEYS[1], ARGV[1] value, ARGV[2] PX ms or '': 1 if stored (the key held no entry; a
# tombstone is replaced: add() after delete() stores)
_ADD = (
    _TOMBSTONED
    + """
if tombstoned(KEYS[1]) then redis.call('DEL', KEYS[1]) end
local done
if ARGV[2] == '' then
  done = redis.call('SET', KEYS[1], ARGV[1], 'NX')
else
  done = redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2], 'NX')
end
if done then return 1 end
return 0
"""
)

# KEYS: keys of one slot; UNLINK each that is not a tombstone (a tombstone stays: the
# invalidation it keeps must outlive a clear()); the number unlinked
_UNLINK_ENTRIES = (
    _TOMBSTONED
    + """
local removed = 0
for _, key in ipairs(KEYS) do
  if not tombstoned(key) then removed = removed + redis.call('UNLINK', key) end
end
return removed
"""
)


class AsyncRedisBackend:
    """Entries are plain Redis strings; bulk operations take one round trip. A key holding
    a tombstone (an invalidation, see :mod:`cachekit.leases.rules`) is absent to every
    method of the contract; the reads note the tombstones they find (for the loads that
    store over them)."""

    local = False
    translate_error = staticmethod(translate_error)

    def __init__(self, clients: AsyncClientProvider) -> None:
        self.clients = clients
        self._access = AsyncRedisAccess(clients)
        self._tombstones = AsyncRedisTombstones(clients, self._access)
        self._log = self._tombstones.log

    # -- capabilities (cachekit.backends.base): one object offers them all --------------
    def scripts(self) -> AsyncRedisAccess:
        return self._access

    def wakeups(self) -> AsyncRedisAccess:
        return self._access

    def streams(self) -> AsyncRedisAccess:
        return self._access

    def scan(self) -> AsyncRedisAccess:
        return self._access

    def tombstones(self) -> AsyncRedisTombstones:
        return self._tombstones

    def client(self) -> Any:
        """The redis-py client underneath (standalone, cluster or the Sentinel's primary),
        for tools that speak Redis themselves (the command line): ``Cache.client``."""
        return self.clients.get()

    def tracking(self) -> AsyncClientProvider:
        """Where a near cache listens for invalidations (``CLIENT TRACKING ... BCAST``):
        this backend's client provider, one server seeing every key."""
        return self.clients

    async def get(self, key: str) -> Any:
        # execute_command, not get(): a frame less per hit (keys=: redis-py's own client
        # cache needs them)
        value = await self.clients.get().execute_command("GET", key, keys=[key])
        if value and value[0]:  # the hit: a first byte other than a tombstone's NUL
            return value
        if value is None:  # the miss, inline
            return MISSING
        return self._log.absent(key, value)  # a tombstone (or b"", NUL-led bytes)

    async def get_many(self, keys: Sequence[str]) -> list[Any]:
        if not keys:
            return []
        values = await self.clients.get().mget(keys)
        return self._log.found(keys, values)

    async def set(self, key: str, value: Any, ttl: float | None) -> bool:
        # SET by execute_command: redis-py's set() checks its eleven keyword arguments
        # first (some twenty Python calls, more than the rest of a store)
        if ttl is None:
            return bool(await self.clients.get().execute_command("SET", key, value))
        return bool(await self.clients.get().execute_command("SET", key, value, "PX", _ms(ttl)))

    async def add(self, key: str, value: Any, ttl: float | None) -> bool:
        px = "" if ttl is None else _ms(ttl)
        return bool(await self._access.run(_ADD, [key], [value, px]))

    async def set_many(self, items: Mapping[str, Any], ttl: float | None) -> None:
        if not items:
            return
        client = self.clients.get()
        if ttl is None:
            await client.mset(dict(items))
            return
        px = _ms(ttl)
        async with client.pipeline(transaction=False) as pipe:
            for key, value in items.items():
                pipe.set(key, value, px=px)
            await pipe.execute()

    async def delete(self, key: str) -> bool:
        return bool(await self.clients.get().delete(key))

    async def delete_many(self, keys: Sequence[str]) -> int:
        if not keys:
            return 0
        return int(await self.clients.get().delete(*keys))

    async def exists(self, key: str) -> bool:
        return bool(await self._access.run(_EXISTS, [key], []))

    async def ttl(self, key: str) -> Any:
        millis = await self._access.run(_PTTL, [key], [])
        if millis == -2:
            return MISSING
        return None if millis == -1 else millis / 1000

    async def expire(self, key: str, ttl: float | None) -> bool:
        px = "" if ttl is None else _ms(ttl)
        return bool(await self._access.run(_EXPIRE, [key], [px]))

    async def incr(self, key: str, delta: int, ttl: float | None) -> int:
        # a new counter gets its expiry (SET NX); INCRBY keeps whatever expiry the key has
        px = "" if ttl is None else _ms(ttl)
        return int(await self._access.run(_INCR, [key], [delta, px]))

    async def delete_pattern(self, pattern: str) -> int:
        client = self.clients.get()
        deleted = 0
        batch: list[Any] = []
        async for key in client.scan_iter(match=pattern, count=_SCAN_COUNT):
            batch.append(key)
            if len(batch) >= _DELETE_BATCH:
                deleted += await self._unlink_entries(client, batch)
                batch = []
        if batch:
            deleted += await self._unlink_entries(client, batch)
        return deleted

    async def _unlink_entries(self, client: Any, keys: Sequence[Any]) -> int:
        """UNLINK those of ``keys`` that are entries (tombstones stay); how many."""
        return int(await self._access.run(_UNLINK_ENTRIES, keys, []))

    async def ping(self) -> bool:
        return bool(await self.clients.get().ping())

    def lock(self, key: str, ttl: float) -> Any:
        """redis-py's Lock: a token under ``key`` with PX ``ttl``, released by a
        compare-and-delete script (bound to this thread's / loop's client)."""
        return self.clients.get().lock(key, timeout=ttl, sleep=_LOCK_POLL, thread_local=False)

    async def close(self) -> None:
        await self.clients.close()


# commands on many keys that a cluster batch splits by slot (their replies are counts)
_SPLIT_BY_SLOT = {"delete": "DEL", "unlink": "UNLINK", "exists": "EXISTS", "touch": "TOUCH"}


class _AsyncBatch:
    """A non-transactional pipeline being filled: Redis commands queue as they are
    called on it; :meth:`script` queues one by SHA and remembers it for a reload.

    On a cluster (``keyslot`` given) a command on many keys (``delete(*keys)``, ...) is
    queued once per slot and its replies summed, so the caller still gets one reply per
    call and no command spans two slots; redis-py sends the queue as one round trip per
    node."""

    __slots__ = ("_client", "_keyslot", "_orders", "_pipe", "_sizes", "scripts")

    def __init__(self, pipe: Any, cluster: Any = None) -> None:
        self._pipe = pipe
        self._client = cluster  # the RedisCluster client, on a cluster
        self._keyslot = None if cluster is None else cluster.keyslot
        self._sizes: list[int] = []  # cluster: commands queued per call
        self._orders: dict[int, list[list[int]]] = {}  # a split MGET's key positions, by call
        self.scripts: list[str] = []

    def script(self, script: str, keys: Sequence[Any], args: Sequence[Any]) -> None:
        self.scripts.append(script)
        # by command: a sync cluster pipeline refuses evalsha() (it routes EVALSHA by keys)
        self._pipe.execute_command(
            "EVALSHA", script_sha(script), len(keys), *keys, *args, **self._route(keys)
        )
        self._sizes.append(1)

    def eval(self, script: str, numkeys: int, *keys_and_args: Any) -> None:
        # by command: a cluster pipeline's eval() is not EVAL (it routes by the keys)
        route = self._route(keys_and_args[:numkeys])
        self._pipe.execute_command("EVAL", script, numkeys, *keys_and_args, **route)
        self._sizes.append(1)

    def _route(self, keys: Sequence[Any]) -> dict[str, Any]:
        return {} if self._client is None or not keys else _route(self._client, keys[0])

    def __getattr__(self, command: str) -> Any:
        method = getattr(self._pipe, command)
        if self._keyslot is None:
            return method
        if command in _SPLIT_BY_SLOT:
            return lambda *keys: self._split(_SPLIT_BY_SLOT[command], keys)
        if command == "mget":
            return self._split_mget

        def queue(*args: Any, **kwargs: Any) -> None:
            method(*args, **kwargs)
            self._sizes.append(1)

        return queue

    def _split(self, command: str, keys: Sequence[Any]) -> None:
        # by command: an asyncio cluster pipeline's unlink() etc. are coroutines of their own
        assert self._keyslot is not None
        groups: dict[int, list[Any]] = {}
        for key in keys:
            groups.setdefault(self._keyslot(key), []).append(key)
        for group in groups.values():
            self._pipe.execute_command(command, *group)
        self._sizes.append(len(groups))

    def _split_mget(self, keys: Sequence[Any]) -> None:
        # one MGET per slot; the replies are put back in the order of ``keys``
        assert self._keyslot is not None
        keys = list(keys)
        groups: dict[int, list[int]] = {}
        for i, key in enumerate(keys):
            groups.setdefault(self._keyslot(key), []).append(i)
        for positions in groups.values():
            self._pipe.execute_command("MGET", *(keys[i] for i in positions))
        self._orders[len(self._sizes)] = list(groups.values())
        self._sizes.append(len(groups))

    def replies(self, raw: list[Any]) -> list[Any]:
        """One reply per call (a split command's: the sum, or its first error; a split
        MGET's: the values in the order asked)."""
        if self._keyslot is None:
            return raw
        replies: list[Any] = []
        start = 0
        for call, size in enumerate(self._sizes):
            part = raw[start : start + size]
            start += size
            error = next((r for r in part if isinstance(r, Exception)), None)
            order = self._orders.get(call)
            if order is not None:
                if error is not None:
                    replies.append(error)
                    continue
                values: list[Any] = [None] * sum(len(positions) for positions in order)
                for positions, got in zip(order, part):
                    for i, value in zip(positions, got):
                        values[i] = value
                replies.append(values)
            elif size == 1:
                replies.append(part[0])
            else:
                replies.append(error if error is not None else sum(int(r) for r in part))
        return replies


class AsyncRedisAccess:
    """The capabilities of a Redis backend (see :mod:`cachekit.backends.base`): atomic
    scripts and batches, blocking wake-ups, consumer-group streams, scan. Each call takes
    the client of this thread / event loop from the provider (a Cluster or Sentinel
    client: redis-py routes each command to the node it belongs on)."""

    def __init__(self, clients: AsyncClientProvider, cluster: bool = False) -> None:
        self._clients = clients
        self._cluster = cluster  # batches split many-key commands by slot

    # -- scripts ----------------------------------------------------------------------
    async def run(self, script: str, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        client = self._clients.get()
        try:
            return await client.evalsha(script_sha(script), len(keys), *keys, *args)
        except redis.exceptions.NoScriptError:  # a new or restarted server: the text once
            return await client.eval(script, len(keys), *keys, *args)

    async def load(self, script: str) -> None:
        await self._clients.get().script_load(script)

    async def batch(self, fill: Callable[[CommandBatch], None]) -> list[Any]:
        client = self._clients.get()
        for attempt in (1, 2):
            async with client.pipeline(transaction=False) as pipe:
                batch = _AsyncBatch(pipe, client if self._cluster else None)
                fill(batch)
                results = batch.replies(list(await pipe.execute(raise_on_error=False)))
            # only a batch that queued script() calls is sent again (the caller said it
            # is safe to repeat); any other one raises what it got
            forgot = any(isinstance(r, redis.exceptions.NoScriptError) for r in results)
            if forgot and attempt == 1 and batch.scripts:  # a new or restarted Redis
                for script in dict.fromkeys(batch.scripts):
                    await client.script_load(script)
                continue
            for result in results:
                if isinstance(result, Exception):
                    raise result
            return results
        raise AssertionError("unreachable")  # pragma: no cover

    # -- wake-ups (the stampede's done lists) -------------------------------------------
    async def wait(self, list_key: str, timeout: float) -> bytes | None:
        # BLMOVE a list onto itself: the element stays, so one element wakes every waiter
        got = await self._clients.get().blmove(list_key, list_key, timeout, "LEFT", "LEFT")
        return None if got is None else bytes(got)

    def wait_limit(self) -> float | None:
        timeout = self._connection_kwargs().get("socket_timeout")
        return None if timeout is None else float(timeout)

    # -- streams (the write-behind queue) -------------------------------------------------
    async def xreadgroup(
        self, groupname: str, consumername: str, streams: Mapping[Any, Any], count: int
    ) -> Any:
        client = self._clients.get()
        if self._cluster and streams:  # one slot (the queue's hash tag): its node, named
            names, ids = list(streams), list(streams.values())
            return await client.execute_command(
                "XREADGROUP", "GROUP", groupname, consumername, "COUNT", count,
                "STREAMS", *names, *ids, **_route(client, names[0]),
            )  # fmt: skip
        return await client.xreadgroup(groupname, consumername, dict(streams), count=count)

    async def xautoclaim(
        self,
        name: str,
        groupname: str,
        consumername: str,
        min_idle_time: int,
        start_id: str,
        count: int,
    ) -> Any:
        return await self._clients.get().xautoclaim(
            name,
            groupname,
            consumername,
            min_idle_time=min_idle_time,
            start_id=start_id,
            count=count,
        )

    async def xrange(self, name: str) -> Any:
        return await self._clients.get().xrange(name)

    async def xdel(self, name: str, *ids: Any) -> int:
        return int(await self._clients.get().xdel(name, *ids))

    def identity(self) -> str:
        if self._clients.name:  # a Cluster or Sentinel: the addresses it was configured with
            return self._clients.name
        try:
            kwargs = self._connection_kwargs()
        except Exception:  # pragma: no cover - a client without a pool
            kwargs = {}
        if kwargs.get("server") is not None:  # fakeredis: its server lives in this process
            return "fakeredis"
        return "{}:{}/{}{}".format(
            kwargs.get("host"), kwargs.get("port"), kwargs.get("db", 0), kwargs.get("path", "")
        )

    # -- scan ---------------------------------------------------------------------------
    async def scan(self, pattern: str) -> list[Any]:
        client = self._clients.get()
        return [key async for key in client.scan_iter(match=pattern, count=_SCAN_COUNT)]

    def _connection_kwargs(self) -> dict[str, Any]:
        return connection_kwargs(self._clients.get())


def _by_slot(client: Any, keys: Sequence[Any]) -> list[list[Any]]:
    """``keys`` grouped by cluster slot (redis-py's ``keyslot``), first-seen order."""
    groups: dict[int, list[Any]] = {}
    for key in keys:
        groups.setdefault(client.keyslot(key), []).append(key)
    return list(groups.values())


class AsyncRedisClusterBackend(AsyncRedisBackend):
    """The backend over redis-py's ``RedisCluster``: a command on one key goes to the node
    owning its slot (redis-py routes it, and follows ``MOVED``/``ASK``); a command on many
    keys is split by slot and the parts are sent as one pipeline, which redis-py sends as
    one round trip per node (``mget_nonatomic`` for reads). No command spans two slots.

    The capabilities are the standalone ones: each script and blocking wait of the
    features names keys of one slot (their hash-tagged key layout), which redis-py routes
    to that slot's node."""

    def __init__(self, clients: AsyncClientProvider) -> None:
        self.clients = clients
        self._access = AsyncRedisAccess(clients, cluster=True)
        self._tombstones = AsyncRedisTombstones(clients, self._access)
        self._log = self._tombstones.log

    def tracking(self) -> ClusterTracking:  # type: ignore[override]
        """Where a near cache listens: one link per primary (each node reports the writes
        of its own slots), the primaries found again after a failover or a new node."""
        return ClusterTracking(self.clients)

    async def get_many(self, keys: Sequence[str]) -> list[Any]:
        if not keys:
            return []
        values = await self.clients.get().mget_nonatomic(list(keys))
        return self._log.found(keys, values)

    async def set_many(self, items: Mapping[str, Any], ttl: float | None) -> None:
        if not items:
            return
        px = None if ttl is None else _ms(ttl)
        async with self.clients.get().pipeline(transaction=False) as pipe:
            for key, value in items.items():
                pipe.set(key, value, px=px)
            await pipe.execute()

    async def _unlink(self, client: Any, keys: Sequence[Any]) -> int:
        async with client.pipeline(transaction=False) as pipe:
            for group in _by_slot(client, keys):
                pipe.execute_command("UNLINK", *group)  # one slot each
            return sum(int(n) for n in await pipe.execute())

    async def delete_many(self, keys: Sequence[str]) -> int:
        if not keys:
            return 0
        return await self._unlink(self.clients.get(), keys)

    async def _unlink_entries(self, client: Any, keys: Sequence[Any]) -> int:
        # redis-py's cluster scan_iter walks every primary's keyspace: keys of many slots
        async with client.pipeline(transaction=False) as pipe:
            for group in _by_slot(client, keys):  # one script per slot
                pipe.execute_command(
                    "EVAL", _UNLINK_ENTRIES, len(group), *group, **_route(client, group[0])
                )
            return sum(int(n) for n in await pipe.execute())


class AsyncRedisTombstones:
    """Invalidations kept in the entries' own keys, and the loads' stores that respect
    them (see :mod:`cachekit.leases.rules`): the backend's ``tombstones()`` capability."""

    def __init__(self, clients: AsyncClientProvider, access: AsyncRedisAccess) -> None:
        self._clients = clients
        self._access = access
        self.log = TombstoneLog()  # what this backend's reads found

    async def arevoke(self, keys: Sequence[str]) -> int:
        """Replace each key by a new tombstone, in one round trip; how many held an entry."""

        tombstones = [new_tombstone() for _ in keys]

        def fill(batch: CommandBatch) -> None:
            for key, tombstone in zip(keys, tombstones):
                queue_revoke(batch, key, tombstone)

        existed = sum(int(n) for n in await self._access.batch(fill))
        for key, tombstone in zip(keys, tombstones):  # this process's next loads store over
            self.log.saw(key, tombstone)
        return existed

    async def astore(self, key: str, entry: Any, ttl: float | None, since: float) -> bool:
        """A load's store (it began at ``since``): ``SET NX``, or a compare-and-set over
        what a read found in the key before ``since`` and did not serve (a tombstone, an
        unusable entry); whether it was stored. A load older than the tombstones' lifetime
        does not store: its invalidation's tombstone may be gone."""
        if time.monotonic() - since >= MARK_LIFETIME:
            return False
        if key not in self.log.seen or self.log.before(key, since) is None:  # the common case
            client = self._clients.get()  # SET by execute_command: see AsyncRedisBackend.set
            if ttl is None:
                return bool(await client.execute_command("SET", key, entry, "NX"))
            px = max(1, int(ttl * 1000))  # _ms(ttl), inline: every load's store comes here
            return bool(await client.execute_command("SET", key, entry, "PX", px, "NX"))
        return bool(await self._access.run(GUARDED_SET, *self.store_args(key, entry, ttl, since)))

    def revoke_all(self) -> None:
        """Nothing to do: the loads of other processes cannot be named (see
        :meth:`cachekit.backends.base.Leases.revoke_all`)."""

    def fence(self, keys: Sequence[str]) -> None:
        """Nothing to do: a load's store never overwrites an entry (``SET NX``)."""

    def store_args(
        self,
        key: str,
        entry: Any,
        ttl: float | None,
        since: float,
        lock_key: str | None = None,
        token: bytes | None = None,
        held: bytes | None = None,
    ) -> tuple[list[Any], list[Any]]:
        """``(keys, args)`` of :data:`~cachekit.leases.rules.GUARDED_SET` for a load that
        began at ``since`` (with a lock: its key, token and what the key held then)."""
        tombstone = self.log.before(key, since) or b""
        px = "" if ttl is None else _ms(ttl)
        return [key, lock_key or key], [entry, px, token or b"", tombstone, held or b""]
