"""A health endpoint for Flask: a blueprint answering ``200`` with the cache's health
report while its backend answers, ``503`` when it does not (see ``Cache.health``; answers
within its ``timeout`` even with Redis frozen)::

    from cachekit.integrations.flask.health import health_blueprint

    app.register_blueprint(health_blueprint(cache))           # GET /healthz
    app.register_blueprint(health_blueprint(fcache, "/ready"))  # a FlaskCache: its cache
"""

from __future__ import annotations

from typing import Any

from .. import missing_extra

try:
    from flask import Blueprint, Response, jsonify
except ModuleNotFoundError as exc:
    raise missing_extra(exc, "flask", "flask") from exc

from cachekit import Cache

__all__ = ["health_blueprint"]


def health_blueprint(
    cache: Any, path: str = "/healthz", *, timeout: float = 0.025, name: str = "cachekit_health"
) -> Blueprint:
    """A blueprint with one ``GET`` view at ``path``. ``cache`` is a :class:`cachekit.Cache`
    or a ``FlaskCache`` (then the current app's cache, looked up per request)."""
    blueprint = Blueprint(name, __name__)

    @blueprint.get(path)
    def health() -> tuple[Response, int, dict[str, str]]:
        target: Cache = cache if isinstance(cache, Cache) else cache.cache
        report = target.health(timeout)
        return jsonify(report), 200 if report["ok"] else 503, {"Cache-Control": "no-store"}

    return blueprint
