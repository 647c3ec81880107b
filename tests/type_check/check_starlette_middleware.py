"""Type-checked only (mypy --strict in .ci/run): every cachekit ASGI middleware is accepted
by ``Starlette.add_middleware`` and ``Middleware(...)`` (their factory protocol passes the
app positionally; a middleware taking ``**options`` must take ``app`` positional-only)."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.middleware import Middleware

from cachekit import Cache
from cachekit.integrations.starlette import (
    CacheMiddleware,
    RateLimitMiddleware,
    SessionMiddleware,
    cache_response,
)


def build(cache: Cache) -> Starlette:
    app = Starlette(middleware=[Middleware(CacheMiddleware, cache=cache, ttl=60)])
    app.add_middleware(CacheMiddleware, cache=cache, ttl=60, lock=True)
    app.add_middleware(RateLimitMiddleware, cache=cache, rate="10/second")
    app.add_middleware(SessionMiddleware, cache=cache, https_only=False)
    return app


def options(cache: Cache, app: Starlette) -> None:
    """The HTTP cache's keywords are typed once (cachekit.http.HttpCacheOptions): the
    policy's fields and the coalescing ones check; a misspelt one is an error."""
    app.add_middleware(CacheMiddleware, cache=cache, lock_ttl=5.0, cacheable_statuses={200, 404})
    cache_response(cache, ttl=60, wait_timeout=1.0, vary_cookies=["lang"], coalesce=False)
    CacheMiddleware(app, cache=cache, lokc=True)  # type: ignore[call-arg]
    cache_response(cache, ttl=60, wait_timout=1.0)  # type: ignore[call-arg]
    app.add_middleware(CacheMiddleware, cache=cache, lock_tll=5.0)  # type: ignore[call-arg]
