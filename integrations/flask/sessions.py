"""Server-side sessions for Flask: ``app.session_interface = CachekitSessionInterface(cache)``.

``flask.session`` stays a dict (JSON values, as Flask's cookie session); the data lives in
the cache's backend and the cookie holds a 256-bit random id. Only what a request changed
is written, and nothing when nothing did.

    from flask import session
    session["user_id"] = 42
    session.regenerate()   # on login: new id, same data, the old id dead
    session.clear()        # logout: deleted server-side

The cookie's name, domain, path, ``HttpOnly`` and ``SameSite`` come from Flask's
``SESSION_COOKIE_*`` settings (``SameSite`` defaults to ``Lax`` when unset); ``Secure`` is
on unless ``secure=False`` is passed (plain-http development). A permanent session
(``session.permanent = True``) gets ``Max-Age`` from ``PERMANENT_SESSION_LIFETIME``;
either way the server ends it after ``idle_timeout`` / ``absolute_timeout``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from .. import missing_extra

try:
    from flask import Flask, Request, Response
    from flask.sessions import SessionInterface, SessionMixin
except ModuleNotFoundError as exc:  # pragma: no cover - depends on the environment
    raise missing_extra(exc, "flask", "flask") from exc

from cachekit import Cache
from cachekit.sessions import CookieOptions, Session, SessionStore

__all__ = ["CachekitSession", "CachekitSessionInterface"]


class CachekitSession(Session, SessionMixin):
    """``flask.session``: a :class:`cachekit.sessions.Session` (a dict) Flask can use."""


class CachekitSessionInterface(SessionInterface):
    """Flask's session interface over a cachekit :class:`~cachekit.Cache`."""

    def __init__(
        self,
        cache: Cache,
        *,
        idle_timeout: float = 2 * 3600.0,
        absolute_timeout: float = 7 * 86400.0,
        touch_after: float | None = None,
        regenerate_grace: float = 0.0,
        secure: bool = True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = SessionStore(
            cache,
            idle_timeout=idle_timeout,
            absolute_timeout=absolute_timeout,
            touch_after=touch_after,
            regenerate_grace=regenerate_grace,
            clock=clock,
            session_class=CachekitSession,
        )
        self.secure = secure

    def _cookie(self, app: Flask, max_age: int | None) -> CookieOptions:
        return CookieOptions(
            name=self.get_cookie_name(app),
            path=self.get_cookie_path(app),
            domain=self.get_cookie_domain(app),
            secure=self.secure,
            httponly=self.get_cookie_httponly(app),
            samesite=self.get_cookie_samesite(app) or "lax",
            max_age=max_age,
        )

    def open_session(self, app: Flask, request: Request) -> CachekitSession:
        session = self.store.load(request.cookies.get(self.get_cookie_name(app)))
        assert isinstance(session, CachekitSession)
        return session

    def save_session(self, app: Flask, session: Any, response: Response) -> None:
        had_cookie = session.had_cookie
        outcome = self.store.save(session)
        max_age = int(app.permanent_session_lifetime.total_seconds()) if session.permanent else None
        cookie = self._cookie(app, max_age)
        if outcome.set_id is not None:
            response.headers.add("Set-Cookie", cookie.header(outcome.set_id))
        elif outcome.clear_cookie and had_cookie:
            response.headers.add("Set-Cookie", cookie.expired_header())
        if had_cookie or outcome.set_id is not None:
            response.vary.add("Cookie")
