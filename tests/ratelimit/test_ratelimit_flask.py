"""Flask: fcache.rate_limit on views, the app-wide CACHEKIT_RATELIMIT default, 429 with
Retry-After and the RateLimit headers, X-Forwarded-For only from trusted proxies."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from cachekit.integrations.flask import FlaskCache
from flask import Flask, request

from cachekit.exceptions import ConfigurationError


@pytest.fixture(params=["memory", "redis"])
def url(request: pytest.FixtureRequest) -> str:
    return "memory://" if request.param == "memory" else request.getfixturevalue("redis_url")


def make_app(url: str, **ratelimit: Any) -> tuple[Flask, FlaskCache]:
    app = Flask(__name__)
    app.config["CACHEKIT_URL"] = url
    app.config["CACHEKIT_PREFIX"] = f"f{uuid.uuid4().hex[:10]}"
    if ratelimit:
        app.config["CACHEKIT_RATELIMIT"] = ratelimit
    fcache = FlaskCache(app)
    return app, fcache


def test_view_decorator(url: str) -> None:
    app, fcache = make_app(url)
    calls = []

    @app.post("/login")
    @fcache.rate_limit("2/minute", name="login", algorithm="fixed")
    def login() -> str:
        calls.append(1)
        return "welcome"

    @app.get("/async")
    @fcache.rate_limit("1/minute")
    async def later() -> str:
        return "later"

    client = app.test_client()
    first = client.post("/login")
    assert first.status_code == 200 and first.text == "welcome"
    assert first.headers["RateLimit-Policy"] == '"login";q=2;w=60'
    assert first.headers["RateLimit"] == '"login";r=1;t=60'
    client.post("/login")
    refused = client.post("/login")
    assert refused.status_code == 429 and refused.text == "Too Many Requests"
    assert 58 <= int(refused.headers["Retry-After"]) <= 60
    assert len(calls) == 2  # the refused request did not run the view
    assert client.get("/async").status_code == 200 and client.get("/async").status_code == 429
    # another client address has its own allowance
    other = client.post("/login", environ_base={"REMOTE_ADDR": "192.0.2.9"})
    assert other.status_code == 200


def test_app_wide_default_exempt_and_own_limits(url: str) -> None:
    app, fcache = make_app(url, default="2/minute", exempt=["health"], legacy_headers=True)

    @app.get("/")
    def index() -> str:
        return "index"

    @app.get("/other")
    def other() -> str:
        return "other"

    @app.get("/health")
    def health() -> str:
        return "ok"

    @app.get("/search")
    @fcache.rate_limit("5/minute")
    def search() -> str:
        return "found"

    client = app.test_client()
    ok = client.get("/")
    assert ok.headers["RateLimit"] == '"http";r=1;t=30' and ok.headers["X-RateLimit-Limit"] == "2"
    assert client.get("/other").status_code == 200  # one allowance across the app
    assert client.get("/").status_code == 429
    assert all(client.get("/health").status_code == 200 for _ in range(5))
    # a view with its own limit is counted by it alone
    assert [client.get("/search").status_code for _ in range(6)] == [200] * 5 + [429]
    assert client.get("/nowhere").status_code == 404  # no endpoint: not counted as a view


def test_forwarded_for_needs_a_trusted_proxy(url: str) -> None:
    app, _ = make_app(url, default="1/minute")

    @app.get("/")
    def index() -> str:
        return "index"

    client = app.test_client()
    assert client.get("/", headers={"X-Forwarded-For": "1.1.1.1"}).status_code == 200
    assert client.get("/", headers={"X-Forwarded-For": "2.2.2.2"}).status_code == 429

    app2, _ = make_app(url, default="1/minute", trusted_proxies="127.0.0.1")

    @app2.get("/")
    def index2() -> str:
        return "index"

    client2 = app2.test_client()
    assert client2.get("/", headers={"X-Forwarded-For": "1.1.1.1"}).status_code == 200
    assert client2.get("/", headers={"X-Forwarded-For": "2.2.2.2"}).status_code == 200
    assert client2.get("/", headers={"X-Forwarded-For": "1.1.1.1"}).status_code == 429


def test_key_function(url: str) -> None:
    app, fcache = make_app(url)

    @app.get("/api")
    @fcache.rate_limit("1/minute", key=lambda req: req.headers.get("X-Api-Key"))
    def api() -> str:
        return request.headers.get("X-Api-Key") or "anonymous"

    client = app.test_client()
    assert client.get("/api", headers={"X-Api-Key": "k1"}).status_code == 200
    assert client.get("/api", headers={"X-Api-Key": "k1"}).status_code == 429
    assert client.get("/api", headers={"X-Api-Key": "k2"}).status_code == 200
    assert [client.get("/api").status_code for _ in range(3)] == [200] * 3  # no key: unlimited


def test_bad_configuration() -> None:
    app = Flask(__name__)
    app.config["CACHEKIT_RATELIMIT"] = {"defualt": "1/minute"}
    with pytest.raises(ConfigurationError, match="defualt"):
        FlaskCache(app)
    with pytest.raises(ConfigurationError):
        FlaskCache(Flask(__name__)).rate_limit("1/minute", algoritm="fixed")
    app = Flask(__name__)
    app.config["CACHEKIT_RATELIMIT"] = {"default": "lots"}
    with pytest.raises(ConfigurationError):
        FlaskCache(app)
