"""Rate-limit decisions for async callers.

This file is the source: ``cachekit/ratelimit/_sync_limiter.py`` is generated from it by
``scripts/unasync.py`` (CI fails when they drift). Edit here, then run the script.
"""

from __future__ import annotations

from typing import Any

from ._core import LimiterCore
from .rules import RESET_SCRIPT, Decision

__all__ = ["AsyncRateLimiterOps"]


class AsyncRateLimiterOps(LimiterCore):
    async def ahit(self, identity: Any, cost: int = 1) -> Decision:
        """Take ``cost`` units from ``identity``'s allowance if it has them (one round trip
        on Redis); the decision either way (reported to the cache's metrics, if any)."""
        decision = await self._adecide(identity, cost, True)
        return decision if self._hub is None else self._report(decision)

    async def apeek(self, identity: Any, cost: int = 1) -> Decision:
        """Whether a hit of ``cost`` would be admitted now, taking nothing: ``remaining``
        is what ``identity`` has now (a hit's decision says what is left after it)."""
        return await self._adecide(identity, cost, False)

    async def areset(self, identity: Any) -> bool:
        """Forget ``identity``'s usage (a full allowance again); whether it had any. False
        when the backend cannot be reached."""
        key = self.key(identity)
        if self._buckets is not None:
            return self._buckets.reset(key)
        if self._fallback is not None:
            self._fallback.reset(key)
        if self._breaker.open:
            self._breaker.resume()
            return False
        scripts = self._ascripts
        if scripts is None:
            raise self._no_scripts("async")
        try:
            return bool(await scripts.run(RESET_SCRIPT, [key], []))
        except Exception as exc:
            self._failed(exc, key, 1, False)
            return False

    async def _adecide(self, identity: Any, cost: int, record: bool) -> Decision:
        cost = self.rule.check_cost(cost)
        key = self.key(identity)
        if self._buckets is not None:
            return self._local(key, cost, record)
        if self._breaker.open:  # Redis is known to be down: decided now, no waiting
            return self._open(key, cost, record)
        scripts = self._ascripts
        if scripts is None:
            raise self._no_scripts("async")
        try:
            reply = await scripts.run(self._script, [key], self._args(cost, record))
        except Exception as exc:
            return self._failed(exc, key, cost, record)
        return self._reply(reply)
