"""Sessions on each scaled-out topology (the ``topology`` fixture: a Redis Cluster, behind
Sentinel, a Valkey cluster): each session is one hash-tagged key, regenerate() spans two
slots in one batch on a cluster, and the guarantees hold (sync and async)."""

from __future__ import annotations

import asyncio
import uuid

from cachekit import Cache
from cachekit.sessions import AsyncSessionStore, SessionStore
from cachekit.testing.servers import ClusterServers, SentinelServers


def test_sessions_on_a_cluster(topology: ClusterServers | SentinelServers) -> None:
    cache = Cache(topology.url, prefix=f"c{uuid.uuid4().hex[:10]}", on_error="raise")
    store = SessionStore(cache)
    ids = []
    for n in range(20):  # ids land on every primary
        session = store.load(None)
        session["n"] = n
        ids.append(store.save(session).set_id)
    for n, sid in enumerate(ids):
        session = store.load(sid)
        assert session["n"] == n
        session["user"] = n
        session.regenerate()
        new = store.save(session).set_id
        assert new not in (None, sid)
        assert store.load(sid).is_new and store.load(new) == {"n": n, "user": n}
        late = store.load(new)
        logout = store.load(new)
        logout.clear()
        store.save(logout)
        late["x"] = 1
        assert store.save(late).lost and store.load(new).is_new
    cache.close()


def test_async_sessions_on_a_cluster(topology: ClusterServers | SentinelServers) -> None:
    cache = Cache(topology.url, prefix=f"c{uuid.uuid4().hex[:10]}", on_error="raise")
    store = AsyncSessionStore(cache)

    async def main() -> None:
        first = await store.load(None)
        first["a"] = 0
        sid = (await store.save(first)).set_id

        async def write(n: int) -> None:
            session = await store.load(sid)
            session[f"k{n}"] = n
            assert (await store.save(session)).written

        await asyncio.gather(*(write(n) for n in range(50)))
        session = await store.load(sid)
        assert len(session) == 51
        session.regenerate()
        new = (await store.save(session)).set_id
        assert (await store.load(sid)).is_new and len(await store.load(new)) == 51
        await cache.aclose()

    asyncio.run(main())
    cache.close()
