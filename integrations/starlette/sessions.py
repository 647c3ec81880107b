"""Server-side sessions for Starlette and FastAPI: a drop-in for Starlette's
``SessionMiddleware`` (``request.session`` is a dict, as there), the data kept in the
cache's backend and only a random id in the cookie.

    app.add_middleware(SessionMiddleware, cache=cache, idle_timeout=1800)

    request.session["user_id"] = 42
    request.session.regenerate()   # on login: new id, same data, the old id dead
    request.session.clear()        # logout: deleted server-side

Starlette's arguments that make sense here are kept (``session_cookie``, ``max_age``,
``path``, ``same_site``, ``https_only``, ``domain``); ``secret_key`` is not needed (the
cookie holds nothing but a 256-bit random id). ``https_only`` is True by default (the
``Secure`` flag): pass ``https_only=False`` for plain-http development.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Literal

from .. import missing_extra

try:
    from starlette.datastructures import MutableHeaders
    from starlette.requests import HTTPConnection
    from starlette.types import ASGIApp, Message, Receive, Scope, Send
except ModuleNotFoundError as exc:  # pragma: no cover - depends on the environment
    raise missing_extra(exc, "starlette", "starlette") from exc

from cachekit import Cache
from cachekit.sessions import AsyncSessionStore, CookieOptions, Session

__all__ = ["SessionMiddleware"]


class SessionMiddleware:
    """Pure ASGI middleware: loads ``scope["session"]`` (one round trip when the request
    carries a session cookie, none otherwise) and saves it when the response starts (only
    what changed; nothing when nothing did). WebSocket scopes get the session read-only."""

    def __init__(
        self,
        app: ASGIApp,
        /,
        cache: Cache,
        session_cookie: str = "session",
        max_age: int | None = None,
        path: str = "/",
        same_site: Literal["lax", "strict", "none"] = "lax",
        https_only: bool = True,
        domain: str | None = None,
        *,
        idle_timeout: float = 2 * 3600.0,
        absolute_timeout: float = 7 * 86400.0,
        touch_after: float | None = None,
        regenerate_grace: float = 0.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``max_age``: the cookie's ``Max-Age`` (default: none, a browser-session cookie;
        the server ends the session after ``idle_timeout`` without requests or
        ``absolute_timeout`` after it began, whichever comes first)."""
        self.app = app
        self.store = AsyncSessionStore(
            cache,
            idle_timeout=idle_timeout,
            absolute_timeout=absolute_timeout,
            touch_after=touch_after,
            regenerate_grace=regenerate_grace,
            clock=clock,
        )
        self.cookie = CookieOptions(
            name=session_cookie,
            path=path,
            domain=domain,
            secure=https_only,
            samesite=same_site,
            max_age=max_age,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        cookie = HTTPConnection(scope).cookies.get(self.cookie.name)
        session = await self.store.load(cookie)
        scope["session"] = session
        if scope["type"] == "websocket":
            await self.app(scope, receive, send)
            return

        async def send_with_cookie(message: Message) -> None:
            if message["type"] == "http.response.start":
                await self._save(session, cookie is not None, message)
            await send(message)

        await self.app(scope, receive, send_with_cookie)

    async def _save(self, session: Session, had_cookie: bool, message: Message) -> None:
        outcome = await self.store.save(session)
        headers = MutableHeaders(scope=message)
        if outcome.set_id is not None:
            headers.append("Set-Cookie", self.cookie.header(outcome.set_id))
        elif outcome.clear_cookie and had_cookie:
            headers.append("Set-Cookie", self.cookie.expired_header())
        if had_cookie or outcome.set_id is not None:
            headers.add_vary_header("Cookie")  # the response depends on who asked
