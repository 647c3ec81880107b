"""Hostile tests: two requesters sharing one cache through the HTTP adapters must never
see each other's page (DESIGN.md "HTTP caching"). Memory and a real redis-server."""

from __future__ import annotations

import warnings
from collections.abc import Iterator

import pytest
from cachekit.integrations.starlette import CacheMiddleware
from fastapi import Cookie, FastAPI, Header
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from cachekit import Cache
from tests.conftest import unique_prefix

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient


@pytest.fixture(params=["memory", "redis"])
def cache(request: pytest.FixtureRequest) -> Iterator[Cache]:
    if request.param == "memory":
        made = Cache("memory://", prefix=unique_prefix())
    else:
        made = Cache(request.getfixturevalue("redis_url"), prefix=unique_prefix())
    yield made
    made.clear()
    made.close()


def _starlette(cache: Cache, endpoint: object) -> TestClient:
    app = Starlette(routes=[Route("/p", endpoint)])  # type: ignore[arg-type]
    app.add_middleware(CacheMiddleware, cache=cache, ttl=60)
    return TestClient(app)


def test_authorization_request_is_not_stored_for_a_guest(cache: Cache) -> None:
    """RFC 9111 3.5: a response to a request with Authorization is not shared unless public."""

    async def page(request: Request) -> Response:
        return PlainTextResponse(f"hi {request.headers.get('authorization', 'guest')}")

    client = _starlette(cache, page)
    assert client.get("/p", headers={"Authorization": "Bearer alice"}).text == "hi Bearer alice"
    assert client.get("/p").text == "hi guest"
    assert client.get("/p", headers={"Authorization": "Bearer bob"}).text == "hi Bearer bob"


def test_fastapi_header_dependency_authorization(cache: Cache) -> None:
    app = FastAPI()

    @app.get("/p")
    async def page(authorization: str | None = Header(default=None)) -> dict[str, str | None]:
        return {"user": authorization}

    app.add_middleware(CacheMiddleware, cache=cache, ttl=60)
    client = TestClient(app)
    assert client.get("/p", headers={"Authorization": "Bearer alice"}).json() == {
        "user": "Bearer alice"
    }
    assert client.get("/p").json() == {"user": None}


@pytest.mark.parametrize(
    "value", ["PRIVATE", "max-age=60, Private", ' private="set-cookie"', "no-store", "No-Store"]
)
def test_private_and_no_store_in_any_spelling_are_not_shared(cache: Cache, value: str) -> None:
    # the same URL: the handler reads a header the key never sees
    async def by_header(request: Request) -> Response:
        return PlainTextResponse(
            f"page of {request.headers.get('x-user')}", headers={"Cache-Control": value}
        )

    client = _starlette(cache, by_header)
    assert client.get("/p", headers={"X-User": "alice"}).text == "page of alice"
    assert client.get("/p", headers={"X-User": "bob"}).text == "page of bob"


def test_vary_on_a_header_one_client_omits(cache: Cache) -> None:
    async def page(request: Request) -> Response:
        return PlainTextResponse(
            f"t={request.headers.get('x-tenant', 'none')}", headers={"Vary": "X-Tenant"}
        )

    client = _starlette(cache, page)
    assert client.get("/p", headers={"X-Tenant": "a"}).text == "t=a"
    assert client.get("/p").text == "t=none"
    assert client.get("/p", headers={"X-Tenant": "b"}).text == "t=b"
    assert client.get("/p", headers={"x-tenant": "a"}).text == "t=a"


def test_host_is_part_of_the_key_across_tenants(cache: Cache) -> None:
    async def page(request: Request) -> Response:
        return PlainTextResponse(f"tenant {request.headers['host']}")

    client = _starlette(cache, page)
    assert client.get("http://a.example/p").text == "tenant a.example"
    assert client.get("http://b.example/p").text == "tenant b.example"
    assert client.get("/p", headers={"Host": "a.example"}).text == "tenant a.example"


def test_304_is_not_answered_for_an_etag_of_another_users_private_page(cache: Cache) -> None:
    async def page(request: Request) -> Response:
        who = request.headers.get("x-user", "")
        return PlainTextResponse(
            f"page of {who}", headers={"ETag": f'"{who}"', "Cache-Control": "private"}
        )

    client = _starlette(cache, page)
    assert client.get("/p", headers={"X-User": "alice"}).status_code == 200
    r = client.get("/p", headers={"X-User": "bob", "If-None-Match": '"alice"'})
    assert r.status_code == 200 and r.text == "page of bob"


@pytest.mark.xfail(
    strict=True,
    reason="a Starlette handler reading request.cookies / a header directly (not the session "
    "or user) is not detected: the page is stored and served to every requester",
)
def test_starlette_handler_reading_a_cookie_directly(cache: Cache) -> None:
    async def page(request: Request) -> Response:
        return PlainTextResponse(f"hello {request.cookies.get('user', 'guest')}")

    client = _starlette(cache, page)
    assert client.get("/p", cookies={"user": "alice"}).text == "hello alice"
    client.cookies.clear()
    assert client.get("/p").text == "hello guest"


@pytest.mark.xfail(
    strict=True,
    reason="FastAPI Cookie() parameters read the Cookie header directly: not detected",
)
def test_fastapi_cookie_dependency(cache: Cache) -> None:
    app = FastAPI()

    @app.get("/p")
    async def page(user: str | None = Cookie(default=None)) -> dict[str, str | None]:
        return {"user": user}

    app.add_middleware(CacheMiddleware, cache=cache, ttl=60)
    client = TestClient(app)
    assert client.get("/p", cookies={"user": "alice"}).json() == {"user": "alice"}
    client.cookies.clear()
    assert client.get("/p").json() == {"user": None}
