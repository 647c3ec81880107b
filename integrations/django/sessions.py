"""Server-side sessions for Django: ``SESSION_ENGINE = "cachekit.integrations.django.sessions"``.

The sessions live in the cachekit cache named by ``SESSION_CACHE_ALIAS`` (default
``"default"``; it must be a ``cachekit.integrations.django.CachekitCache``), one Redis hash
per session: a save writes only the keys the request changed, so concurrent requests of
one session do not undo each other's writes, and a request still running when the user
logged out cannot bring the session back (its save raises Django's ``UpdateError``, which
``SessionMiddleware`` answers with ``SessionInterrupted``, as Django's own backends do).

``login()`` calls ``cycle_key()``: a new id, the same data, the old id dead at once (or
read-only for ``CACHEKIT_SESSION_REGENERATE_GRACE`` seconds); ``logout()`` / ``flush()``
deletes the session server-side. An id the client made up is never adopted.

Settings: ``CACHEKIT_SESSION_IDLE_TIMEOUT`` (default ``SESSION_COOKIE_AGE``) and
``CACHEKIT_SESSION_ABSOLUTE_TIMEOUT`` (default 7 days), both enforced, the backend's
expiry the smaller remaining; ``CACHEKIT_SESSION_TOUCH_AFTER``. Values must be JSON (as
with Django's default ``JSONSerializer``). The cookie is Django's: set
``SESSION_COOKIE_SECURE = True`` in production (``HttpOnly`` and ``SameSite=Lax`` are
Django's defaults). ``set_expiry()`` changes the cookie's lifetime only: the server-side
timeouts are the two settings above, for every session.
"""

from __future__ import annotations

from typing import Any

from .. import missing_extra

try:
    from django.conf import settings
    from django.contrib.sessions.backends.base import SessionBase, UpdateError
    from django.core.cache import caches
except ModuleNotFoundError as exc:  # pragma: no cover - depends on the environment
    raise missing_extra(exc, "django", "django") from exc

from cachekit.exceptions import ConfigurationError
from cachekit.sessions import Session
from cachekit.sessions import SessionStore as CoreStore

__all__ = ["SessionStore"]

_WEEK = 7 * 86400.0


def _core_store() -> CoreStore:
    alias = getattr(settings, "SESSION_CACHE_ALIAS", "default")
    backend = caches[alias]
    cache = getattr(backend, "cachekit", None)
    if cache is None:
        raise ConfigurationError(
            f"SESSION_CACHE_ALIAS {alias!r} must name a cachekit cache "
            "(BACKEND 'cachekit.integrations.django.CachekitCache')"
        )
    return CoreStore(
        cache,
        idle_timeout=getattr(
            settings, "CACHEKIT_SESSION_IDLE_TIMEOUT", settings.SESSION_COOKIE_AGE
        ),
        absolute_timeout=getattr(settings, "CACHEKIT_SESSION_ABSOLUTE_TIMEOUT", _WEEK),
        touch_after=getattr(settings, "CACHEKIT_SESSION_TOUCH_AFTER", None),
        regenerate_grace=getattr(settings, "CACHEKIT_SESSION_REGENERATE_GRACE", 0.0),
    )


class SessionStore(SessionBase):  # type: ignore[misc]  # django ships no type hints
    """Django's session API over :class:`cachekit.sessions.SessionStore`."""

    def __init__(self, session_key: str | None = None) -> None:
        super().__init__(session_key)
        self._store = _core_store()
        self._state: Session | None = None
        self._session_key: str | None  # (Django's property)

    def load(self) -> dict[str, Any]:
        state = self._store.load(self.session_key)
        self._state = state
        if state.is_new and not state.unavailable:
            self._session_key = None  # unknown, expired or forged: never adopted
        return dict(state)

    def exists(self, session_key: str) -> bool:
        return bool(self._store.exists(session_key))

    def create(self) -> None:
        """A new session: its id is made when something is stored in it."""
        self._state = Session()
        self._session_key = None
        self._session_cache: dict[str, Any] = {}
        self.modified = True

    def save(self, must_create: bool = False) -> None:
        data = self._get_session(no_load=must_create)
        state = self._state
        if state is None or must_create:
            state = self._state = Session()
        dict.clear(state)  # the request's view, without meaning logout (Session.clear)
        dict.update(state, data)
        outcome = self._store.save(state)
        if outcome.lost:
            raise UpdateError
        if outcome.set_id is not None:
            self._session_key = outcome.set_id
        elif outcome.clear_cookie:
            self._session_key = None

    def cycle_key(self) -> None:
        """On login: the data moves to a new id at the save, the old id dies."""
        self._get_session()
        if self._state is None:
            self._state = Session()
        self._state.regenerate()
        self.modified = True

    def delete(self, session_key: str | None = None) -> None:
        key = session_key or self.session_key
        if key is None:
            return
        self._store.delete(key)
        if key == self.session_key:
            self._state = None

    @classmethod
    def clear_expired(cls) -> None:
        """Nothing to do: the backend expires sessions itself."""
