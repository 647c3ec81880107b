"""The memory backend's lock object for async callers (the table it shares: ``lock.py``).

This file is the source: ``cachekit/backends/memory/_sync_lock.py`` is generated from it by
``scripts/unasync.py`` (CI fails when they drift). Edit here, then run the script.
"""

from __future__ import annotations

from .lock import MemoryLockBase

__all__ = ["AsyncMemoryLock"]


class AsyncMemoryLock(MemoryLockBase):
    async def acquire(
        self,
        blocking: bool | None = None,
        blocking_timeout: float | None = None,
        token: str | bytes | None = None,
    ) -> bool:
        mine = self._start(token)
        table = self.table
        deadline = None if blocking_timeout is None else table.clock() + blocking_timeout
        while True:
            if table.try_acquire(self.name, mine, self.timeout):
                self.token = mine
                return True
            if blocking is False or (deadline is not None and table.clock() >= deadline):
                return False
            await table.released.await_for(
                self._wait_time(deadline), lambda: table.holder(self.name) is not None
            )

    async def release(self) -> None:
        self._release()

    async def extend(self, additional_time: float, replace_ttl: bool = False) -> bool:
        return self._extend(additional_time, replace_ttl)

    async def locked(self) -> bool:
        return self.table.holder(self.name) is not None

    async def owned(self) -> bool:
        return self._owned()
