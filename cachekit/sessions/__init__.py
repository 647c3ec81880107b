"""Server-side sessions over a cache's backend (Redis hashes, or in process).

    store = SessionStore(cache, idle_timeout=1800, absolute_timeout=8 * 3600)
    session = store.load(cookie_value)      # one round trip; a new session for an unknown id
    session["user_id"] = 42 ; session.regenerate()   # on login: new id, same data
    outcome = store.save(session)           # writes only what changed; outcome.set_id ...

The framework adapters (``cachekit.integrations.starlette.SessionMiddleware``,
``cachekit.integrations.flask.CachekitSessionInterface``, the Django engine
``cachekit.integrations.django.sessions``) drive it. Rules: :mod:`cachekit.sessions.rules`.
"""

from ._async_store import AsyncSessionStore
from ._sync_store import SessionStore
from .rules import CookieOptions, SaveOutcome, Session, SessionConfig, is_session_id, new_session_id

__all__ = [
    "AsyncSessionStore",
    "CookieOptions",
    "SaveOutcome",
    "Session",
    "SessionConfig",
    "SessionStore",
    "is_session_id",
    "new_session_id",
]
