"""Type-checked only (mypy --strict in .ci/run): every cachekit ASGI middleware is accepted
by ``Starlette.add_middleware`` and ``Middleware(...)`` (their factory protocol passes the
app positionally; a middleware taking ``**options`` must take ``app`` positional-only)."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.middleware import Middleware

from cachekit import Cache
from cachekit.integrations.starlette import CacheMiddleware, RateLimitMiddleware, SessionMiddleware


def build(cache: Cache) -> Starlette:
    app = Starlette(middleware=[Middleware(CacheMiddleware, cache=cache, ttl=60)])
    app.add_middleware(CacheMiddleware, cache=cache, ttl=60, lock=True)
    app.add_middleware(RateLimitMiddleware, cache=cache, rate="10/second")
    app.add_middleware(SessionMiddleware, cache=cache, https_only=False)
    return app
