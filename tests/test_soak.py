"""Soak: a mixed workload on Redis while the server is frozen, killed and restarted.

8 threads and 8 asyncio tasks run get/set/delete, ``@cached`` (with ``lock=True``), tags,
locks and write-behind against one cache while the main thread freezes the server
(SIGSTOP), kills it, restarts it (AOF on, so what was acknowledged survives, as on a
production Redis) and lets it run. Afterwards:

- no exception escaped a cache call (a lock that could not be taken during an outage
  raises :class:`~cachekit.LockError`, which is its contract, and is counted apart);
- no wrong value: every value read was written for that key, and a read that started
  after an invalidation had returned never sees a value older than that invalidation;
- no write-behind write was lost: the source holds every item's last write.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections import Counter, defaultdict
from typing import Any

import pytest

from cachekit import BackendError, Cache, LockError
from cachekit.testing.servers import RedisServer

from conftest import unique_prefix

pytestmark = pytest.mark.slow

KEYS = 12
WB_IDS = 16


class World:
    """The sources behind the cache, and what the checks compare against."""

    def __init__(self) -> None:
        self.mutex = threading.Lock()
        self.written: dict[str, set[tuple[int, int]]] = defaultdict(set)
        # version of each @cached item (item(i) at i, aitem(i) at KEYS + i), and the
        # version whose invalidation has returned
        self.source = [0] * (2 * KEYS)
        self.committed = [0] * (2 * KEYS)
        self.tag_source = 0
        self.tag_committed = 0
        self.holders: dict[int, int] = defaultdict(int)
        self.db: dict[Any, Any] = {}
        self.last_wb: dict[Any, int] = {}
        self.errors: list[str] = []
        self.wrong: list[str] = []
        self.lock_refusals = 0
        self.operations = 0

    def bump(self, i: int) -> int:
        with self.mutex:
            self.source[i] += 1
            return self.source[i]

    def commit(self, i: int, version: int) -> None:
        with self.mutex:
            self.committed[i] = max(self.committed[i], version)

    def bump_tag(self) -> int:
        with self.mutex:
            self.tag_source += 1
            return self.tag_source

    def commit_tag(self, version: int) -> None:
        with self.mutex:
            self.tag_committed = max(self.tag_committed, version)

    def check_kv(self, key: str, value: Any) -> None:
        if value is None:
            return
        if not (isinstance(value, list) and value[0] == key and (value[1], value[2]) in
                self.written[key]):  # fmt: skip
            self.wrong.append(f"{key}: read {value!r}, never written there")

    def check_versioned(self, what: str, floor: int, value: Any, i: int | None) -> None:
        if i is not None and value[0] != i:
            self.wrong.append(f"{what}: value {value!r} belongs to another item")
        elif value[-1] < floor:
            self.wrong.append(f"{what}: read version {value[-1]} after {floor} was committed")


def test_soak_under_faults() -> None:
    server = RedisServer(extra_args=("--appendonly", "yes", "--appendfsync", "always"))
    cache = Cache(server.url, prefix=unique_prefix(), timeout=0.1, retry_interval=0.05)
    world = World()
    stop = threading.Event()

    @cache.cached(ttl=30, key="item:{i}", lock=True, lock_ttl=2, lock_timeout=1)
    def item(i: int) -> list[int]:
        return [i, world.source[i]]

    @cache.cached(ttl=30, key="aitem:{i}", lock=True, lock_ttl=2, lock_timeout=1)
    async def aitem(i: int) -> list[int]:
        return [i, world.source[KEYS + i]]

    @cache.cached(ttl=30, key="tagged:{i}", tags=("grp",))
    def tagged(i: int) -> list[int]:
        return [i, world.tag_source]

    def save(batch: dict[Any, Any]) -> None:
        with world.mutex:
            world.db.update(batch)

    wb = cache.write_behind(key="wb:{}", store_many=save, batch_size=8, flush_interval=0.05)
    awb = cache.write_behind(key="awb:{}", store_many=save, batch_size=8, flush_interval=0.05)

    def step(worker: int, seq: int, rng: random.Random) -> None:
        op = rng.randrange(8)
        i = rng.randrange(KEYS)
        key = f"kv:{i}"
        if op == 0:
            world.written[key].add((worker, seq))
            cache.set(key, [key, worker, seq], ttl=30)
        elif op == 1:
            world.check_kv(key, cache.get(key))
        elif op == 2:
            cache.delete(key)
        elif op == 3:
            floor = world.committed[i]
            world.check_versioned(f"item({i})", floor, item(i), i)
        elif op == 4:
            version = world.bump(i)
            item.invalidate(i)
            world.commit(i, version)
        elif op == 5:
            floor = world.tag_committed
            world.check_versioned(f"tagged({i})", floor, tagged(i), i)
            if rng.random() < 0.2:
                version = world.bump_tag()
                cache.invalidate_tags("grp")
                world.commit_tag(version)
        elif op == 6:
            try:
                with cache.lock(f"lock:{i % 3}", ttl=5, timeout=0.3):
                    world.holders[i % 3] += 1
                    held = world.holders[i % 3]
                    world.holders[i % 3] -= 1
                    if held != 1:
                        world.wrong.append(f"lock:{i % 3} held by {held} at once")
            except (LockError, BackendError):  # no lock without a backend: its contract
                world.lock_refusals += 1
        else:
            wid = (worker, seq % WB_IDS)  # each id written by one worker: its order is known
            world.last_wb[repr(wid)] = seq
            wb.set(repr(wid), seq)

    def thread_worker(worker: int) -> None:
        rng = random.Random(worker)
        seq = 0
        while not stop.is_set():
            seq += 1
            try:
                step(worker, seq, rng)
            except Exception as exc:  # what the soak is looking for
                world.errors.append(f"thread {worker}: {type(exc).__name__}: {exc}")
            world.operations += 1

    async def task_worker(worker: int) -> None:
        rng = random.Random(1000 + worker)
        seq = 0
        while not stop.is_set():
            seq += 1
            op = rng.randrange(6)
            i = rng.randrange(KEYS)
            key = f"kv:{i}"
            try:
                if op == 0:
                    world.written[key].add((worker, seq))
                    await cache.aset(key, [key, worker, seq], ttl=30)
                elif op == 1:
                    world.check_kv(key, await cache.aget(key))
                elif op == 2:
                    floor = world.committed[KEYS + i]
                    world.check_versioned(f"aitem({i})", floor, await aitem(i), i)
                elif op == 3:
                    version = world.bump(KEYS + i)
                    await aitem.ainvalidate(i)
                    world.commit(KEYS + i, version)
                elif op == 4:
                    try:
                        async with cache.lock(f"alock:{i % 3}", ttl=5, timeout=0.3):
                            world.holders[100 + i % 3] += 1
                            held = world.holders[100 + i % 3]
                            await asyncio.sleep(0)
                            world.holders[100 + i % 3] -= 1
                            if held != 1:
                                world.wrong.append(f"alock:{i % 3} held by {held} at once")
                    except (LockError, BackendError):
                        world.lock_refusals += 1
                else:
                    wid = (worker, seq % WB_IDS)
                    world.last_wb[repr(wid)] = seq
                    await awb.aset(repr(wid), seq)
            except Exception as exc:
                world.errors.append(f"task {worker}, op {op}: {type(exc).__name__}: {exc}")
            world.operations += 1
            await asyncio.sleep(0)

    async def tasks_main() -> None:
        await asyncio.gather(*(task_worker(1000 + n) for n in range(8)))
        await awb.aclose(timeout=30)

    threads = [threading.Thread(target=thread_worker, args=(n,)) for n in range(8)]
    loop_thread = threading.Thread(target=lambda: asyncio.run(tasks_main()))
    try:
        for thread in [*threads, loop_thread]:
            thread.start()
        # the faults: each phase long enough for the breaker to trip and to recover
        time.sleep(0.8)
        server.freeze()
        time.sleep(0.6)
        server.thaw()
        time.sleep(0.6)
        server.kill()
        time.sleep(0.4)
        server.start()
        time.sleep(0.8)
        server.freeze()
        time.sleep(0.3)
        server.thaw()
        time.sleep(0.8)
        stop.set()
        for thread in [*threads, loop_thread]:
            thread.join(30)
            assert not thread.is_alive(), f"{thread.name} did not stop"
        wb.flush(timeout=30)
    finally:
        stop.set()
        cache.close()
        server.stop()

    lost = {wid: (seq, world.db.get(wid)) for wid, seq in world.last_wb.items()
            if world.db.get(wid) != seq}  # fmt: skip
    report = (
        f"{world.operations} operations, {len(world.errors)} escaped, {len(world.wrong)} wrong, "
        f"{len(lost)} write-behind ids lost, {world.lock_refusals} lock refusals"
    )
    print(report)
    assert world.operations > 1000, report
    assert world.errors == [], Counter(e[:80] for e in world.errors)
    assert world.wrong == [], world.wrong[:10]
    assert lost == {}, dict(list(lost.items())[:10])
