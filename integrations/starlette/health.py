"""A health endpoint for Starlette and FastAPI: ``200`` with the report while the cache's
backend answers, ``503`` when it does not (see ``Cache.ahealth``; answers within its
``timeout`` even with Redis frozen)::

    from cachekit.integrations.starlette.health import health_route

    app = Starlette(routes=[health_route(cache)])            # GET /healthz
    app.router.routes.append(health_route(cache, "/ready"))   # FastAPI: the same Route
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from .. import missing_extra

try:
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route
except ModuleNotFoundError as exc:
    raise missing_extra(exc, "starlette", "starlette") from exc

from cachekit import Cache

__all__ = ["health_endpoint", "health_route"]


def health_endpoint(
    cache: Cache, timeout: float = 0.025
) -> Callable[[Request], Awaitable[Response]]:
    """An endpoint answering ``cache``'s health report as JSON, 200 if ok else 503."""

    async def health(request: Request) -> Response:
        report = await cache.ahealth(timeout)
        return JSONResponse(
            report, status_code=200 if report["ok"] else 503, headers={"Cache-Control": "no-store"}
        )

    return health


def health_route(
    cache: Cache, path: str = "/healthz", *, timeout: float = 0.025, name: str = "cachekit_health"
) -> Route:
    """A ``GET``/``HEAD`` route at ``path`` serving :func:`health_endpoint`."""
    return Route(path, health_endpoint(cache, timeout), methods=["GET", "HEAD"], name=name)
