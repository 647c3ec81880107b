"""The HTTP middlewares of the shared-Redis services (rate limits, sessions) on each
scaled-out topology (the ``topology`` fixture: a Redis Cluster, behind Sentinel, a Valkey
cluster), through Starlette and Flask: a limit is shared by two app instances (two
processes' worth of middleware over one Redis), a session survives login, regenerate and
logout, and the keys they write land on more than one primary where there are several."""

from __future__ import annotations

import uuid
import warnings
from typing import Any

import redis
from cachekit.integrations.flask import CachekitSessionInterface, FlaskCache
from cachekit.integrations.starlette import RateLimitMiddleware, SessionMiddleware
from flask import Flask, jsonify, session
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

from cachekit import Cache
from cachekit.testing.servers import ClusterServers, SentinelServers

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient


def _cache(topology: ClusterServers | SentinelServers, prefix: str) -> Cache:
    return Cache(topology.url, prefix=prefix, on_error="raise")


def _primaries_holding(topology: ClusterServers | SentinelServers, prefix: str) -> int:
    """How many primaries hold keys of ``prefix`` (a cluster's; 1 otherwise)."""
    if not isinstance(topology, ClusterServers):
        return 1
    holding = 0
    for primary in topology.primaries():
        client = redis.Redis(port=primary.port)
        try:
            holding += any(True for _ in client.scan_iter(match=f"*{prefix}*", count=1000))
        finally:
            client.close()
    return holding


async def hello(request: Request) -> PlainTextResponse:
    return PlainTextResponse("hello")


def test_starlette_rate_limit_is_shared_across_app_instances(
    topology: ClusterServers | SentinelServers,
) -> None:
    prefix = f"t{uuid.uuid4().hex[:10]}"
    caches = [_cache(topology, prefix) for _ in range(2)]
    clients = []
    for cache in caches:
        app = Starlette(routes=[Route("/", hello)])
        app.add_middleware(RateLimitMiddleware, cache=cache, rate="3/minute", name="api")
        clients.append(TestClient(app))
    codes = [clients[n % 2].get("/").status_code for n in range(5)]
    assert codes == [200, 200, 200, 429, 429]  # one allowance, wherever the request lands
    for peer in range(20):  # other clients' allowances: keys spread over the slots
        other = TestClient(clients[0].app, client=(f"192.0.2.{peer}", 1000))
        assert other.get("/").status_code == 200
    if isinstance(topology, ClusterServers):
        assert _primaries_holding(topology, prefix) >= 2
    for cache in caches:
        cache.close()


def test_starlette_sessions_login_regenerate_logout(
    topology: ClusterServers | SentinelServers,
) -> None:
    cache = _cache(topology, f"t{uuid.uuid4().hex[:10]}")

    async def login(request: Request) -> JSONResponse:
        request.session["user"] = request.path_params["user"]
        request.session.regenerate()  # type: ignore[attr-defined]
        return JSONResponse({"ok": True})

    async def show(request: Request) -> JSONResponse:
        return JSONResponse(dict(request.session))

    async def logout(request: Request) -> JSONResponse:
        request.session.clear()
        return JSONResponse({"ok": True})

    app = Starlette(
        routes=[
            Route("/login/{user}", login, methods=["POST"]),
            Route("/me", show),
            Route("/logout", logout, methods=["POST"]),
        ]
    )
    app.add_middleware(SessionMiddleware, cache=cache, https_only=False)
    for user in ("ann", "bob", "cid", "dee"):  # session ids over several slots
        client = TestClient(app)
        assert client.post(f"/login/{user}").status_code == 200
        before = client.cookies.get("session")
        assert client.get("/me").json() == {"user": user}
        assert client.post("/logout").status_code == 200
        assert client.get("/me").json() == {}
        client.cookies.set("session", before or "")  # the old id: nothing behind it
        assert client.get("/me").json() == {}
        assert client.post(f"/login/{user}").status_code == 200  # kept, for the count below
    if isinstance(topology, ClusterServers):
        assert _primaries_holding(topology, cache.namespace.prefix) >= 2
    cache.close()


def _flask_app(cache_url: str, prefix: str, cache: Cache) -> tuple[Flask, FlaskCache]:
    app = Flask(__name__)
    app.config["CACHEKIT_URL"] = cache_url
    app.config["CACHEKIT_PREFIX"] = prefix
    app.secret_key = "test"
    fcache = FlaskCache(app)
    app.session_interface = CachekitSessionInterface(cache)
    return app, fcache


def test_flask_rate_limit_and_sessions(topology: ClusterServers | SentinelServers) -> None:
    prefix = f"t{uuid.uuid4().hex[:10]}"
    cache = _cache(topology, prefix)
    app, fcache = _flask_app(topology.url, prefix, cache)

    @app.post("/login/<user>")
    @fcache.rate_limit("2/minute", name="login", algorithm="fixed")
    def login(user: str) -> Any:
        session["user"] = user
        return jsonify(ok=True)

    @app.get("/me")
    def me() -> Any:
        return jsonify(dict(session))

    client = app.test_client()
    assert client.post("/login/ann").status_code == 200
    assert client.get("/me").get_json() == {"user": "ann"}
    assert client.post("/login/ann").status_code == 200
    assert client.post("/login/ann").status_code == 429
    assert client.get("/me").get_json() == {"user": "ann"}  # the session is untouched
    other = app.test_client()
    assert other.post("/login/bob", environ_base={"REMOTE_ADDR": "192.0.2.9"}).status_code == 200
    assert other.get("/me").get_json() == {"user": "bob"}
    cache.close()
