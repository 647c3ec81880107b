"""The memory backend's lock object for sync callers (the table it shares: ``lock.py``).

GENERATED from ``cachekit/backends/memory/_async_lock.py`` by
``scripts/unasync.py`` -- do not edit; edit the async source and run the script.
"""

from __future__ import annotations

from .lock import MemoryLockBase

__all__ = ["MemoryLock"]


class MemoryLock(MemoryLockBase):
    def acquire(
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
            table.released.wait_for(
                self._wait_time(deadline), lambda: table.holder(self.name) is not None
            )

    def release(self) -> None:
        self._release()

    def extend(self, additional_time: float, replace_ttl: bool = False) -> bool:
        return self._extend(additional_time, replace_ttl)

    def locked(self) -> bool:
        return self.table.holder(self.name) is not None

    def owned(self) -> bool:
        return self._owned()
