"""What the sync and async session stores share: the wiring to a cache, the keys, the
in-process store (memory backend), and the error policy."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..backends import base
from ..core.keys import internal_head
from ..core.sentinel import MISSING
from ..exceptions import BackendError, ConfigurationError
from .rules import (
    CREATED,
    DATA,
    GRACE,
    LAST,
    NOTHING,
    SaveOutcome,
    SavePlan,
    Session,
    SessionConfig,
    decode_fields,
    is_session_id,
    new_session_id,
)

if TYPE_CHECKING:
    from .._cache import Cache

__all__ = ["StoreCore"]

logger = logging.getLogger(__name__)

# In-process sessions: every read-modify-write of one process's memory sessions is made
# under this lock (microseconds, no I/O inside), so concurrent saves of one session from
# threads and tasks merge field by field as the Redis scripts do.
_MEMORY_LOCK = threading.Lock()


class StoreCore:
    """A session store over a cache's backend (see :mod:`cachekit.sessions.rules`)."""

    def __init__(
        self,
        cache: Cache,
        *,
        idle_timeout: float = 2 * 3600.0,
        absolute_timeout: float = 7 * 86400.0,
        touch_after: float | None = None,
        regenerate_grace: float = 0.0,
        clock: Callable[[], float] = time.time,
        session_class: type[Session] = Session,
    ) -> None:
        self.session_class = session_class  # a framework's subclass (Flask's SessionMixin)
        self.config = SessionConfig(idle_timeout, absolute_timeout, touch_after, regenerate_grace)
        self._cache = cache
        self._clock = clock
        self._head = internal_head(cache.namespace.text, "session")
        # an in-process store (it offers local_state()) keeps the sessions' field dicts
        self._memory: Any = cache._backend if cache._local_state is not None else None
        self._scripts: base.Scripts | None = cache._scripts
        self._ascripts: base.AsyncScripts | None = cache._ascripts
        if self._memory is None and self._scripts is None and self._ascripts is None:
            raise ConfigurationError(
                "sessions need a backend offering local_state() (in-process) or scripts() "
                "(Redis): see cachekit.backends.base"
            )
        self._breaker = cache._breaker

    def key(self, session_id: str) -> str:
        """The backend key of a session (``{id}`` is its cluster hash tag)."""
        return f"{self._head}{{{session_id}}}"

    # -- outcomes -------------------------------------------------------------------------
    def _loaded(self, session_id: str, fields: Any) -> Session:
        decoded = None if fields is None else decode_fields(_pairs(fields))
        if decoded is None:  # unknown, expired or foreign: never adopted (fixation)
            return self.session_class(had_cookie=True)
        created, values, read_only = decoded
        try:
            return self.session_class(
                session_id, values, created=created, had_cookie=True, read_only=read_only
            )
        except ValueError:  # a value that is not JSON: not ours
            logger.warning("ignoring an unreadable session")
            return self.session_class(had_cookie=True)

    def _unreadable(self, exc: BaseException | None) -> Session:
        """The backend failed (or the circuit is open): an empty session that is never
        saved, the cookie left alone. ``on_error="raise"`` raises instead."""
        self._error(exc)
        return self.session_class(had_cookie=True, unavailable=True)

    def _error(self, exc: BaseException | None) -> None:
        cache = self._cache
        if exc is None:
            self._breaker.resume()
            if cache._raise_errors:
                raise cache._circuit_error()
            return
        error = cache._counted(exc)  # counted; an outage opens the circuit
        if cache._raise_errors or not isinstance(error, BackendError):
            raise error from exc

    def _outcome(
        self, session: Session, plan: SavePlan, new_id: str | None, reply: Any, now: float
    ) -> SaveOutcome:
        if plan.update is None or reply:
            session._saved(plan, new_id, now)
        if plan.create:
            return SaveOutcome(set_id=new_id, written=True)
        if plan.update is not None:
            return SaveOutcome(lost=not reply, written=bool(reply))
        return SaveOutcome(clear_cookie=True, written=plan.drop is not None)

    def _failed_save(self, exc: BaseException | None) -> SaveOutcome:
        self._error(exc)
        return NOTHING

    # -- the in-process store: the scripts' rules, under one lock ---------------------
    def _memory_load(self, session_id: str) -> Session:
        cfg, now, key = self.config, self._clock(), self.key(session_id)
        with _MEMORY_LOCK:
            fields = self._memory.get(key)
            if fields is MISSING:
                return self.session_class(had_cookie=True)
            created, last = float(fields[CREATED]), float(fields[LAST])
            if cfg.expired(created, last, now):
                self._memory.delete(key)
                return self.session_class(had_cookie=True)
            if GRACE not in fields and now - last >= cfg.touch_interval:
                fields = {**fields, LAST: repr(now).encode()}
                self._memory.set(key, fields, cfg.ttl(created, now))
        return self._loaded(session_id, fields)

    def _memory_save(self, session: Session, plan: SavePlan) -> SaveOutcome:
        cfg, now, memory = self.config, self._clock(), self._memory
        new_id: str | None = None
        with _MEMORY_LOCK:
            reply: Any = None
            if plan.drop is not None:
                old = self.key(plan.drop)
                if plan.grace and (fields := memory.get(old)) is not MISSING:
                    memory.set(old, {**fields, GRACE: b"1"}, cfg.regenerate_grace)
                else:
                    memory.delete(old)
            if plan.create:
                new_id = new_session_id()
                created = now if plan.created is None else plan.created
                ttl = cfg.ttl(created, now)
                if ttl > 0:
                    fields = {DATA + n: v for n, v in plan.sets.items()}
                    fields[CREATED], fields[LAST] = repr(created).encode(), repr(now).encode()
                    memory.set(self.key(new_id), fields, ttl)
                else:
                    new_id = None
            elif plan.update is not None:
                reply = self._memory_update(self.key(plan.update), plan, now)
        if plan.create and new_id is None:
            return SaveOutcome(clear_cookie=True)
        return self._outcome(session, plan, new_id, reply, now)

    def _memory_update(self, key: str, plan: SavePlan, now: float) -> bool:
        cfg, memory = self.config, self._memory
        fields = memory.get(key)
        if fields is MISSING or GRACE in fields:
            return False  # deleted (logout), expired, or an old id: nothing resurrected
        created, last = float(fields[CREATED]), float(fields[LAST])
        ttl = cfg.ttl(created, now)
        if cfg.expired(created, last, now) or ttl <= 0:
            memory.delete(key)
            return False
        fields = {**fields, **{DATA + n: v for n, v in plan.sets.items()}}
        for name in plan.deletes:
            fields.pop(DATA + name, None)
        fields[LAST] = repr(now).encode()
        memory.set(key, fields, ttl)
        return True

    @staticmethod
    def _usable(session_id: object) -> bool:
        return is_session_id(session_id)


def _pairs(fields: Any) -> dict[Any, Any]:
    """A hash's fields from HGETALL's flat reply (a script's) or a mapping."""
    if isinstance(fields, dict):
        return fields
    items = list(fields)
    return dict(zip(items[::2], items[1::2]))
