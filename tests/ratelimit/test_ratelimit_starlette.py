"""Starlette / FastAPI: 429 with Retry-After and the RateLimit headers, per client address
(X-Forwarded-For only from trusted proxies), key functions, the dependency, the decorator."""

from __future__ import annotations

import uuid
import warnings
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import Depends, FastAPI
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

from cachekit import Cache
from cachekit.integrations.starlette import RateLimit, RateLimitMiddleware, rate_limit

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient


@pytest.fixture(params=["memory", "redis"])
def cache(request: pytest.FixtureRequest) -> Iterator[Cache]:
    url = "memory://" if request.param == "memory" else request.getfixturevalue("redis_url")
    cache = Cache(url, prefix=f"s{uuid.uuid4().hex[:10]}")
    yield cache
    cache.close()


async def hello(request: Request) -> PlainTextResponse:
    return PlainTextResponse("hello")


def app_with(cache: Cache, **options: Any) -> Starlette:
    app = Starlette(routes=[Route("/", hello)])
    app.add_middleware(RateLimitMiddleware, cache=cache, **options)
    return app


def test_middleware_refuses_with_429_and_headers(cache: Cache) -> None:
    client = TestClient(app_with(cache, rate="2/minute", algorithm="fixed", name="api"))
    first, second, third = (client.get("/") for _ in range(3))
    assert first.status_code == second.status_code == 200 and first.text == "hello"
    assert first.headers["ratelimit-policy"] == '"api";q=2;w=60'
    assert first.headers["ratelimit"] == '"api";r=1;t=60'
    assert second.headers["ratelimit"] == '"api";r=0;t=60'
    assert "retry-after" not in second.headers
    assert third.status_code == 429 and third.text == "Too Many Requests"
    assert 58 <= int(third.headers["retry-after"]) <= 60
    assert third.headers["ratelimit"].startswith('"api";r=0;')


def test_forwarded_for_is_ignored_unless_the_proxy_is_trusted(cache: Cache) -> None:
    # the test client's peer is "testclient"; a client rotating X-Forwarded-For must not
    # get a fresh allowance per spoofed address
    client = TestClient(app_with(cache, rate="1/minute"))
    assert client.get("/", headers={"X-Forwarded-For": "1.1.1.1"}).status_code == 200
    assert client.get("/", headers={"X-Forwarded-For": "2.2.2.2"}).status_code == 429


def test_trusted_proxy_forwards_the_client_address(cache: Cache) -> None:
    app = app_with(cache, rate="1/minute", trusted_proxies=["10.0.0.0/8"])
    client = TestClient(app, client=("10.0.0.5", 1234))  # the proxy is the peer
    assert client.get("/", headers={"X-Forwarded-For": "198.51.100.1"}).status_code == 200
    assert client.get("/", headers={"X-Forwarded-For": "198.51.100.2"}).status_code == 200
    assert client.get("/", headers={"X-Forwarded-For": "198.51.100.1"}).status_code == 429
    # a client prepending an address of its choice is still itself
    spoof = {"X-Forwarded-For": "203.0.113.7, 198.51.100.2"}
    assert client.get("/", headers=spoof).status_code == 429


def test_key_function_exempt_and_legacy_headers(cache: Cache) -> None:
    app = app_with(
        cache,
        rate="1/minute",
        key=lambda request: request.headers.get("x-api-key"),  # None: unlimited
        exempt=lambda request: request.url.path == "/health",
        legacy_headers=True,
    )
    client = TestClient(app)
    assert client.get("/", headers={"x-api-key": "a"}).status_code == 200
    refused = client.get("/", headers={"x-api-key": "a"})
    assert refused.status_code == 429 and refused.headers["x-ratelimit-remaining"] == "0"
    assert client.get("/", headers={"x-api-key": "b"}).status_code == 200
    assert all(client.get("/").status_code == 200 for _ in range(3))  # no key: not limited


def test_fastapi_dependency(cache: Cache) -> None:
    app = FastAPI()
    search_limit = RateLimit(cache, "2/minute", name="search", algorithm="sliding")

    @app.get("/search", dependencies=[Depends(search_limit)])
    async def search(q: str) -> dict[str, str]:
        return {"q": q}

    @app.get("/free")
    async def free() -> dict[str, bool]:
        return {"ok": True}

    client = TestClient(app)
    ok = client.get("/search", params={"q": "x"})
    assert ok.status_code == 200 and ok.json() == {"q": "x"}
    assert ok.headers["ratelimit"] == '"search";r=1;t=120'
    client.get("/search", params={"q": "x"})
    refused = client.get("/search", params={"q": "x"})
    assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1
    assert client.get("/free").status_code == 200


def test_starlette_decorator_sync_and_async(cache: Cache) -> None:
    @rate_limit(cache, "1/minute", name="login")
    async def login(request: Request) -> JSONResponse:
        return JSONResponse({"ok": True})

    @rate_limit(cache, "1/minute", name="sync")
    def plain(request: Request) -> PlainTextResponse:
        return PlainTextResponse("plain")

    app = Starlette(routes=[Route("/login", login, methods=["POST"]), Route("/plain", plain)])
    client = TestClient(app)
    first = client.post("/login")
    assert first.status_code == 200 and first.headers["ratelimit"].startswith('"login";r=0;')
    assert client.post("/login").status_code == 429
    assert client.get("/plain").text == "plain" and client.get("/plain").status_code == 429


def test_websocket_and_lifespan_pass_through(cache: Cache) -> None:
    async def ws(websocket: Any) -> None:
        await websocket.accept()
        await websocket.send_text("hi")
        await websocket.close()

    from starlette.routing import WebSocketRoute

    app = Starlette(routes=[WebSocketRoute("/ws", ws)])
    app.add_middleware(RateLimitMiddleware, cache=cache, rate="1/minute")
    with TestClient(app) as client:  # lifespan
        for _ in range(3):
            with client.websocket_connect("/ws") as socket:
                assert socket.receive_text() == "hi"
