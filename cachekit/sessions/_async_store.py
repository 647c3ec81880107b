"""The session store for async callers.

This file is the source: ``cachekit/sessions/_sync_store.py`` is generated from it by
``scripts/unasync.py`` (CI fails when they drift). Edit here, then run the script.

A load is one round trip (one script: read the hash, drop it if expired, refresh the idle
expiry when due); a save at most one (one script, or one batch when an id changes).
"""

from __future__ import annotations

from typing import Any

from ..backends.base import CommandBatch
from ._core import StoreCore
from .rules import (
    DELETE_SCRIPT,
    GRACE_SCRIPT,
    LOAD_SCRIPT,
    NOTHING,
    SAVE_SCRIPT,
    SaveOutcome,
    Session,
    new_session_id,
    plan_save,
    save_args,
)

__all__ = ["AsyncSessionStore"]


class AsyncSessionStore(StoreCore):
    """Sessions in a cache's backend: ``store.load(cookie_value)`` at the start of a
    request, ``store.save(session)`` at its end (the outcome says which cookie to send)."""

    async def load(self, session_id: str | None) -> Session:
        """The session ``session_id`` names, or a new empty one (no id, unknown id, expired,
        malformed: an id the client chose is never adopted)."""
        if session_id is None:
            return self.session_class()
        if not self._usable(session_id):
            return self.session_class(had_cookie=True)
        if self._memory is not None:
            return self._memory_load(session_id)
        scripts = self._ascripts
        if scripts is None or self._breaker.open:
            return self._unreadable(None)
        cfg = self.config
        now = self._clock()
        try:
            fields = await scripts.run(
                LOAD_SCRIPT, [self.key(session_id)], [*cfg.args(now), repr(cfg.touch_interval)]
            )
        except Exception as exc:
            return self._unreadable(exc)
        return self._loaded(session_id, fields or None)

    async def save(self, session: Session) -> SaveOutcome:
        """Write what changed (nothing when nothing did): at most one round trip."""
        plan = plan_save(session, self.config.regenerate_grace)
        if plan.empty:
            return SaveOutcome(clear_cookie=True) if plan.clear_cookie else NOTHING
        if self._memory is not None:
            return self._memory_save(session, plan)
        scripts = self._ascripts
        if scripts is None or self._breaker.open:
            return self._failed_save(None)
        now = self._clock()
        new_id = new_session_id() if plan.create else None
        args = save_args(self.config, now, plan)
        grace_ms = max(1, int(self.config.regenerate_grace * 1000))

        def fill(batch: CommandBatch) -> None:
            if plan.drop is not None:
                old = self.key(plan.drop)
                if plan.grace:
                    batch.script(GRACE_SCRIPT, [old], [grace_ms])
                else:
                    batch.script(DELETE_SCRIPT, [old], [])
            if new_id is not None:
                batch.script(SAVE_SCRIPT, [self.key(new_id)], args)

        try:
            if plan.update is not None:
                reply: Any = await scripts.run(SAVE_SCRIPT, [self.key(plan.update)], args)
            elif plan.drop is not None and new_id is None:
                reply = await scripts.run(DELETE_SCRIPT, [self.key(plan.drop)], [])
            else:
                replies = await scripts.batch(fill)
                reply = replies[-1]
                if new_id is not None and not reply:  # past the absolute timeout
                    return SaveOutcome(clear_cookie=True, written=plan.drop is not None)
        except Exception as exc:
            return self._failed_save(exc)
        return self._outcome(session, plan, new_id, reply, now)

    async def delete(self, session_id: str) -> bool:
        """Delete a session server-side (e.g. every device's on a password change)."""
        if not self._usable(session_id):
            return False
        if self._memory is not None:
            return bool(self._memory.delete(self.key(session_id)))
        scripts = self._ascripts
        if scripts is None:
            return bool(self._failed_save(None).written)
        return bool(await scripts.run(DELETE_SCRIPT, [self.key(session_id)], []))

    async def exists(self, session_id: str) -> bool:
        """Whether ``session_id`` names a live session (an old id in its grace counts)."""
        if not self._usable(session_id):
            return False
        session = await self.load(session_id)
        return session.id is not None
