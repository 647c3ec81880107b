"""Starlette / FastAPI adapter: CacheMiddleware and cache_response, through Starlette's
TestClient, httpx over ASGI, and httpx against uvicorn on a loopback port."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
import warnings
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import pytest
import uvicorn
from cachekit.integrations.starlette import CacheMiddleware, cache_response
from fastapi import Depends, FastAPI
from pydantic import BaseModel
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from cachekit import BackendError, Cache
from cachekit.testing.servers import RedisServer
from tests.conftest import unique_prefix

with warnings.catch_warnings():  # starlette 0.52 touches a deprecated anyio alias; 1.x
    warnings.simplefilter("ignore")  # warns when it finds httpx rather than httpx2
    from starlette.testclient import TestClient


@pytest.fixture(params=["memory", "redis"])
def cache(request: pytest.FixtureRequest) -> Iterator[Cache]:
    if request.param == "memory":
        made = Cache("memory://", prefix=unique_prefix())
    else:  # the default serializer (orjson): the adapter must still store bytes
        made = Cache(request.getfixturevalue("redis_server").url, prefix=unique_prefix())
    yield made
    made.clear()
    made.close()


class Counter:
    def __init__(self) -> None:
        self.calls: dict[str, int] = {}

    def hit(self, name: str) -> int:
        self.calls[name] = self.calls.get(name, 0) + 1
        return self.calls[name]

    def __getitem__(self, name: str) -> int:
        return self.calls.get(name, 0)


def make_app(cache: Cache, counter: Counter, **options: Any) -> tuple[Starlette, CacheMiddleware]:
    async def page(request: Request) -> Response:
        n = counter.hit("page")
        headers = {}
        for name, value in request.query_params.multi_items():
            if name.startswith("h-"):  # the test chooses response headers
                headers[name[2:]] = value
        body = f"page {n} {request.url.path} {sorted(request.query_params.multi_items())}"
        return PlainTextResponse(body, headers=headers)

    async def vary(request: Request) -> Response:
        n = counter.hit("vary")
        lang = request.headers.get("accept-language", "none")
        return PlainTextResponse(f"{lang} {n}", headers={"Vary": "Accept-Language"})

    async def cookie(request: Request) -> Response:
        n = counter.hit("cookie")
        response = PlainTextResponse(f"cookie {n}")
        response.set_cookie("sid", "abc")
        return response

    async def huge(request: Request) -> Response:
        counter.hit("huge")
        return Response(b"x" * 30_000, media_type="application/octet-stream")

    async def stream(request: Request) -> Response:
        counter.hit("stream")

        async def chunks() -> AsyncIterator[bytes]:
            for i in range(5):
                yield f"chunk{i};".encode()

        return StreamingResponse(chunks(), media_type="text/plain")

    async def boom(request: Request) -> Response:
        counter.hit("boom")
        raise RuntimeError("boom")

    async def write(request: Request) -> Response:
        counter.hit("write")
        return PlainTextResponse("written")

    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_text("ws ok")
        await websocket.close()

    app = Starlette(
        routes=[
            Route("/vary", vary),
            Route("/cookie", cookie),
            Route("/huge", huge),
            Route("/stream", stream),
            Route("/boom", boom),
            Route("/items/{rest:path}", write, methods=["POST", "DELETE"]),
            WebSocketRoute("/ws", ws),
            Route("/{rest:path}", page),
        ]
    )
    options.setdefault("max_body_size", 20_000)
    middleware = CacheMiddleware(app, cache=cache, ttl=30, **options)
    return app, middleware


@pytest.fixture
def counter() -> Counter:
    return Counter()


@pytest.fixture
def setup(cache: Cache, counter: Counter) -> tuple[TestClient, CacheMiddleware]:
    _, middleware = make_app(cache, counter, etag_from_body=True)
    return TestClient(middleware, raise_server_exceptions=False), middleware


def test_miss_then_hit(setup: tuple[TestClient, CacheMiddleware], counter: Counter) -> None:
    client, _ = setup
    first = client.get("/a?x=1")
    assert first.status_code == 200
    assert first.headers["cache-status"] == "cachekit; fwd=uri-miss; stored"
    assert "age" not in first.headers
    second = client.get("/a?x=1")
    assert second.text == first.text == "page 1 /a [('x', '1')]"
    assert second.headers["cache-status"].startswith("cachekit; hit; ttl=")
    assert second.headers["age"] == "0"
    assert second.headers["etag"] == first.headers["etag"]
    assert counter["page"] == 1
    assert client.get("/a?x=2").text.startswith("page 2")  # another query: another entry


def test_head_is_answered_from_the_get_entry(
    setup: tuple[TestClient, CacheMiddleware], counter: Counter
) -> None:
    client, _ = setup
    body = client.get("/h").content
    head = client.head("/h")
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-length"] == str(len(body))
    assert "hit" in head.headers["cache-status"]
    assert counter["page"] == 1


def test_conditional_requests_get_304(setup: tuple[TestClient, CacheMiddleware]) -> None:
    client, _ = setup
    etag = client.get("/c").headers["etag"]
    not_modified = client.get("/c", headers={"If-None-Match": etag})
    assert not_modified.status_code == 304 and not_modified.content == b""
    assert not_modified.headers["etag"] == etag
    assert client.get("/c", headers={"If-None-Match": '"other"'}).status_code == 200
    lm = "Wed, 21 Oct 2015 07:28:00 GMT"
    client.get("/lm", params={"h-last-modified": lm})
    since = client.get("/lm", params={"h-last-modified": lm}, headers={"If-Modified-Since": lm})
    assert since.status_code == 304


def test_cache_tag_is_stripped_stored_and_purged(
    setup: tuple[TestClient, CacheMiddleware], counter: Counter
) -> None:
    client, middleware = setup
    first = client.get("/p/1", params={"h-cache-tag": "products, product-1"})
    assert "cache-tag" not in first.headers
    client.get("/p/2", params={"h-cache-tag": "products, product-2"})
    client.get("/other", params={"h-cache-tag": "other"})
    assert counter["page"] == 3
    assert middleware.invalidate_tags("product-1") == 1
    assert (
        client.get("/p/1", params={"h-cache-tag": "products, product-1"})
        .headers["cache-status"]
        .endswith("stored")
    )
    assert (
        "hit"
        in client.get("/p/2", params={"h-cache-tag": "products, product-2"}).headers["cache-status"]
    )
    assert middleware.invalidate_tags("products") == 2
    client.get("/p/2", params={"h-cache-tag": "products, product-2"})
    client.get("/other", params={"h-cache-tag": "other"})
    assert counter["page"] == 5  # /p/1 and /p/2 again; /other still cached


def test_invalidate_by_url_and_by_path_pattern(
    setup: tuple[TestClient, CacheMiddleware], counter: Counter
) -> None:
    client, middleware = setup
    for path in ("/products/1", "/products/2?page=3", "/products", "/blog/1"):
        client.get(path)
    assert counter["page"] == 4
    assert middleware.invalidate_url("http://testserver/products/1") is True
    assert middleware.invalidate_url("http://testserver/products/1") is False
    client.get("/products/1")
    assert counter["page"] == 5
    # "/products/*": every product page, whatever the query; not /products nor /blog
    assert middleware.invalidate_path("/products/*") == 2
    assert middleware.invalidate_path("/products", host="testserver") == 1
    for path in ("/products/1", "/products/2?page=3", "/products", "/blog/1"):
        client.get(path)
    assert counter["page"] == 8


def test_invalidate_path_purges_urls_longer_than_the_key_limit(
    setup: tuple[TestClient, CacheMiddleware], counter: Counter
) -> None:
    client, middleware = setup
    long_query = "?q=" + "y" * 200
    report = "/reports/" + "x" * 120 + "/detail"
    urls = [report + long_query, "/reports/1" + long_query, "/blog/" + "z" * 220]
    assert all(len(url) > 200 for url in urls)

    def run_counts() -> list[int]:
        before = counter["page"]
        statuses = [client.get(url).headers["cache-status"] for url in urls]
        assert all("hit" in s or s.endswith("stored") for s in statuses)
        return [int("hit" not in s) for s in statuses] + [counter["page"] - before]

    assert run_counts() == [1, 1, 1, 3]
    assert run_counts() == [0, 0, 0, 0]  # all three are stored
    assert middleware.invalidate_path(report) == 1
    assert run_counts() == [1, 0, 0, 1]
    assert middleware.invalidate_path("/reports/*", host="testserver") == 2
    assert run_counts() == [1, 1, 0, 2]
    assert middleware.invalidate_path("/reports/*", host="elsewhere") == 0
    assert middleware.invalidate_path("/blog/" + "z" * 220) == 1
    assert run_counts() == [0, 0, 1, 1]


async def test_async_invalidation(setup: tuple[TestClient, CacheMiddleware]) -> None:
    _, middleware = setup
    transport = httpx.ASGITransport(app=middleware)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        await client.get("/x", params={"h-cache-tag": "t"})
        await client.get("/y")
        await client.get("/z")
        tagged = await client.get("/x", params={"h-cache-tag": "t"})
        assert tagged.headers["cache-status"].startswith("cachekit; hit")
        assert await middleware.ainvalidate_tags("t") == 1
        assert await middleware.ainvalidate_url("http://t/y") is True
        assert await middleware.ainvalidate_path("/z") == 1
        for path in ("/x?h-cache-tag=t", "/y", "/z"):
            assert (await client.get(path)).headers["cache-status"].endswith("stored")


def test_unsafe_method_invalidates_the_url(
    setup: tuple[TestClient, CacheMiddleware], counter: Counter
) -> None:
    client, _ = setup
    app_pages = counter
    client.get("/items/9")
    assert "hit" in client.get("/items/9").headers["cache-status"]
    response = client.post("/items/9")
    assert response.text == "written"
    assert response.headers["cache-status"] == "cachekit; fwd=method"
    assert client.get("/items/9").headers["cache-status"].endswith("stored")
    assert app_pages["page"] == 2


def test_non_http_scopes_pass_straight_through(setup: tuple[TestClient, CacheMiddleware]) -> None:
    client, _ = setup
    with client.websocket_connect("/ws") as websocket:
        assert websocket.receive_text() == "ws ok"
    with client:  # lifespan scope
        assert client.get("/life").status_code == 200


@pytest.mark.parametrize(
    ("params", "headers", "reason"),
    [
        ({"h-cache-control": "no-store"}, {}, "no-store"),
        ({"h-cache-control": "private, max-age=60"}, {}, "private"),
        ({"h-cache-control": "no-cache"}, {}, "no-cache"),
        ({"h-vary": "*"}, {}, "vary *"),
        ({}, {"Authorization": "Bearer x"}, "authorization"),
        ({}, {"Cache-Control": "no-store"}, "request no-store"),
    ],
)
def test_uncacheable_responses_are_not_stored(
    setup: tuple[TestClient, CacheMiddleware],
    counter: Counter,
    params: dict[str, str],
    headers: dict[str, str],
    reason: str,
) -> None:
    client, _ = setup
    for _ in range(2):
        response = client.get("/u", params=params, headers=headers)
        assert response.headers["cache-status"] == "cachekit; fwd=uri-miss", reason
    assert counter["page"] == 2


def test_set_cookie_is_never_stored(
    setup: tuple[TestClient, CacheMiddleware], counter: Counter
) -> None:
    client, _ = setup
    assert client.get("/cookie").text == "cookie 1"
    assert client.get("/cookie").text == "cookie 2"
    assert counter["cookie"] == 2


def test_authorization_is_served_only_public_entries(
    setup: tuple[TestClient, CacheMiddleware], counter: Counter
) -> None:
    client, _ = setup
    auth = {"Authorization": "Bearer secret"}
    client.get("/shared")
    assert client.get("/shared", headers=auth).headers["cache-status"] == "cachekit; fwd=request"
    public = {"h-cache-control": "public, max-age=60"}
    client.get("/pub", params=public, headers=auth)  # stored: the response said public
    assert "hit" in client.get("/pub", params=public, headers=auth).headers["cache-status"]
    assert "hit" in client.get("/pub", params=public).headers["cache-status"]


def test_vary_on_a_header_the_request_lacks(
    setup: tuple[TestClient, CacheMiddleware], counter: Counter
) -> None:
    client, _ = setup
    assert client.get("/vary").text == "none 1"
    assert client.get("/vary").text == "none 1"  # absent again: the same variant
    assert client.get("/vary", headers={"Accept-Language": ""}).text == " 2"  # empty != absent
    assert client.get("/vary", headers={"Accept-Language": "fr"}).text == "fr 3"
    assert client.get("/vary", headers={"Accept-Language": "fr"}).text == "fr 3"
    assert client.get("/vary").text == "none 1"
    assert counter["vary"] == 3


def test_unicode_long_and_space_urls_and_header_values(
    setup: tuple[TestClient, CacheMiddleware], counter: Counter
) -> None:
    client, _ = setup
    paths = [
        "/caf%C3%A9/%E2%9C%93?q=%F0%9F%98%80",
        "/with%20space/a%20b?x=a%20b&y=c+d",
        "/long/" + "a" * 5000 + "?q=" + "b" * 3000,
    ]
    for path in paths:
        first = client.get(path)
        second = client.get(path)
        assert first.status_code == second.status_code == 200
        assert second.text == first.text
        assert "hit" in second.headers["cache-status"]
    assert counter["page"] == len(paths)
    assert "café/✓" in client.get(paths[0]).text
    # long header values with spaces round-trip through the cache
    value = "a b  c " + "v" * 4000
    first = client.get("/hdr", params={"h-x-note": value})
    second = client.get("/hdr", params={"h-x-note": value})
    assert "hit" in second.headers["cache-status"]
    assert second.headers["x-note"] == first.headers["x-note"] == value
    # a long request header named by Vary
    long_lang = "fr-" + "x" * 6000
    assert client.get("/vary", headers={"Accept-Language": long_lang}).text.endswith(" 1")
    assert client.get("/vary", headers={"Accept-Language": long_lang}).text.endswith(" 1")


def test_duplicate_query_parameters(
    setup: tuple[TestClient, CacheMiddleware], counter: Counter
) -> None:
    client, _ = setup
    a = client.get("/q?a=1&a=2&b=3")
    assert "hit" in client.get("/q?b=3&a=1&a=2").headers["cache-status"]  # names sorted
    swapped = client.get("/q?a=2&a=1&b=3")  # repeated values keep their order: different
    assert swapped.headers["cache-status"].endswith("stored")
    assert a.text != swapped.text
    assert counter["page"] == 2


def test_huge_response_passes_through_and_is_not_cached(
    setup: tuple[TestClient, CacheMiddleware], counter: Counter
) -> None:
    client, _ = setup
    for _ in range(2):
        response = client.get("/huge")
        assert response.content == b"x" * 30_000
        assert response.headers["cache-status"] == "cachekit; fwd=uri-miss"
    assert counter["huge"] == 2


def test_streaming_response_passes_through_and_is_not_cached(
    setup: tuple[TestClient, CacheMiddleware], counter: Counter
) -> None:
    client, _ = setup
    for _ in range(2):
        response = client.get("/stream")
        assert response.text == "chunk0;chunk1;chunk2;chunk3;chunk4;"
        assert response.headers["cache-status"] == "cachekit; fwd=uri-miss"
    assert counter["stream"] == 2


async def _drive(app: Any, path: str, on_send: Callable[[dict[str, Any]], None]) -> None:
    scope = {
        "type": "http",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": [(b"host", b"example.com")],
        "server": ("example.com", 80),
    }

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        on_send(message)

    await app(scope, receive, send)


async def test_non_ascii_header_bytes_round_trip() -> None:
    """Header bytes outside ASCII (UTF-8 or latin-1 on the wire) are kept byte for byte,
    in the response and in the request headers named by Vary."""
    calls = 0

    async def app(scope: Any, receive: Any, send: Any) -> None:
        nonlocal calls
        calls += 1
        lang = dict(scope["headers"]).get(b"accept-language", b"-")
        headers = [
            (b"content-type", b"text/plain"),
            (b"content-length", str(len(lang)).encode()),
            (b"vary", b"Accept-Language"),
            (b"x-note", b"caf\xc3\xa9 \xe9t\xe9"),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": lang})

    middleware = CacheMiddleware(app, cache=Cache(prefix=unique_prefix()))
    for lang in (b"\xc3\xa9t\xc3\xa9", b"\xe9t\xe9", b"\xc3\xa9t\xc3\xa9"):
        sent: list[dict[str, Any]] = []
        scope = {
            "type": "http",
            "method": "GET",
            "scheme": "http",
            "path": "/h\u00e9",
            "raw_path": b"/h\xc3\xa9",
            "query_string": "q=\u00e9".encode(),
            "headers": [(b"host", b"example.com"), (b"accept-language", lang)],
        }

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict[str, Any], sent: list[dict[str, Any]] = sent) -> None:
            sent.append(message)

        await middleware(scope, receive, send)
        headers = dict(sent[0]["headers"])
        assert headers[b"x-note"] == b"caf\xc3\xa9 \xe9t\xe9"
        assert sent[1]["body"] == lang
    assert calls == 2  # the third request is the first one's variant
    assert headers[b"cache-status"].startswith(b"cachekit; hit")


@pytest.mark.parametrize("with_length", [False, True], ids=["streaming", "too-large"])
async def test_pass_through_is_unbuffered(with_length: bool) -> None:
    """Each chunk reaches the client before the app produces the next one."""
    sent: list[dict[str, Any]] = []
    seen_when_producing: list[int] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        headers = [(b"content-type", b"text/plain")]
        if with_length:
            headers.append((b"content-length", b"4000"))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        for i in range(4):
            seen_when_producing.append(len(sent))
            await send({"type": "http.response.body", "body": b"y" * 1000, "more_body": i < 3})

    middleware = CacheMiddleware(app, cache=Cache(prefix=unique_prefix()), max_body_size=1500)
    await _drive(middleware, "/s", sent.append)
    bodies = [m for m in sent if m["type"] == "http.response.body"]
    assert b"".join(m["body"] for m in bodies) == b"y" * 4000
    if with_length:  # refused on its Content-Length: nothing held back at all
        assert seen_when_producing == [1, 2, 3, 4]
    else:  # the start waits for the first chunk, which shows it streams: both go on
        assert seen_when_producing == [0, 2, 3, 4]
    start = sent[0]
    assert (b"cache-status", b"cachekit; fwd=uri-miss") in start["headers"]


async def test_large_body_without_length_stops_buffering_at_the_limit() -> None:
    sent: list[dict[str, Any]] = []
    seen_when_producing: list[int] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"a" * 1000, "more_body": False})

    cache = Cache(prefix=unique_prefix())
    middleware = CacheMiddleware(app, cache=cache, max_body_size=500)
    await _drive(middleware, "/big", sent.append)
    await _drive(middleware, "/big", sent.append)
    assert [m.get("body") for m in sent if m["type"] == "http.response.body"] == [b"a" * 1000] * 2
    assert seen_when_producing == []


def test_app_error_is_not_cached_and_not_swallowed(
    setup: tuple[TestClient, CacheMiddleware], counter: Counter
) -> None:
    client, _ = setup
    assert client.get("/boom").status_code == 500
    assert client.get("/boom").status_code == 500
    assert counter["boom"] == 2


async def test_concurrent_cold_requests_run_the_app_once(cache: Cache) -> None:
    calls = 0
    middleware: CacheMiddleware

    async def slow(request: Request) -> Response:
        nonlocal calls
        calls += 1
        # hold the response until the 15 other requests are parked behind this one
        deadline = time.monotonic() + 5
        while middleware.http_cache.followers() < 15 and time.monotonic() < deadline:
            await asyncio.sleep(0.001)
        return PlainTextResponse("slow")

    middleware = CacheMiddleware(Starlette(routes=[Route("/slow", slow)]), cache=cache, ttl=30)
    transport = httpx.ASGITransport(app=middleware)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        responses = await asyncio.gather(*(client.get("/slow") for _ in range(16)))
    assert calls == 1
    assert all(r.text == "slow" for r in responses)
    statuses = sorted(r.headers["cache-status"] for r in responses)
    assert statuses.count("cachekit; fwd=uri-miss; stored") == 1
    assert all(s.startswith("cachekit; hit") for s in statuses if "fwd" not in s)


async def test_uncacheable_cold_requests_do_not_share_a_response(cache: Cache) -> None:
    calls = 0

    async def personal(request: Request) -> Response:
        nonlocal calls
        calls += 1
        response = PlainTextResponse(f"for {calls}")
        response.set_cookie("sid", str(calls))
        return response

    middleware = CacheMiddleware(Starlette(routes=[Route("/me", personal)]), cache=cache)
    transport = httpx.ASGITransport(app=middleware)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        responses = await asyncio.gather(*(client.get("/me") for _ in range(4)))
    assert calls == 4
    assert len({r.text for r in responses}) == 4


async def test_processes_coalesce_through_the_cache_lock(redis_server: RedisServer) -> None:
    """Two middleware instances with their own Cache objects stand in for two processes."""
    prefix = unique_prefix()
    caches = [Cache(redis_server.url, prefix=prefix) for _ in range(2)]
    started = asyncio.Event()
    release = asyncio.Event()
    calls = 0

    async def slow(request: Request) -> Response:
        nonlocal calls
        calls += 1
        started.set()
        await release.wait()
        return PlainTextResponse("once")

    app = Starlette(routes=[Route("/once", slow)])
    first, second = (CacheMiddleware(app, cache=c, ttl=30, lock=True) for c in caches)
    waiting = asyncio.Event()  # the second "process" is blocked on the lock
    bytes_cache = second.http_cache.cache  # where the middleware takes its locks
    real_lock = bytes_cache.lock

    def spying_lock(*args: Any, **kwargs: Any) -> Any:
        lock = real_lock(*args, **kwargs)
        acquire = lock.aacquire

        async def aacquire(blocking: Any = None, **options: Any) -> bool:
            if blocking:
                waiting.set()
            return await acquire(blocking=blocking, **options)

        lock.aacquire = aacquire  # type: ignore[method-assign]
        return lock

    bytes_cache.lock = spying_lock  # type: ignore[method-assign]
    async with (
        httpx.AsyncClient(transport=httpx.ASGITransport(app=first), base_url="http://t") as a,
        httpx.AsyncClient(transport=httpx.ASGITransport(app=second), base_url="http://t") as b,
    ):
        leader = asyncio.ensure_future(a.get("/once"))
        await asyncio.wait_for(started.wait(), 10)
        follower = asyncio.ensure_future(b.get("/once"))
        await asyncio.wait_for(waiting.wait(), 10)
        release.set()
        responses = await asyncio.gather(leader, follower)
    assert calls == 1
    assert [r.text for r in responses] == ["once", "once"]
    assert responses[1].headers["cache-status"].startswith("cachekit; hit")
    for c in caches:
        c.clear()
        c.close()


@pytest.mark.parametrize("on_error", ["ignore", "raise"])
def test_backend_outage_returns_the_apps_response(
    private_redis: RedisServer, counter: Counter, on_error: str
) -> None:
    cache = Cache(private_redis.url, prefix=unique_prefix(), on_error=on_error)
    _, middleware = make_app(cache, counter)
    client = TestClient(middleware, raise_server_exceptions=True)
    assert client.get("/o").headers["cache-status"].endswith("stored")
    assert "hit" in client.get("/o").headers["cache-status"]
    private_redis.kill()
    for _ in range(3):
        response = client.get("/o")
        assert response.status_code == 200
        assert response.text.startswith("page ")
    assert client.get("/o", params={"h-cache-tag": "t"}).status_code == 200
    assert counter["page"] == 5
    cache.close()


def test_given_an_orjson_cache_entries_are_raw_bytes_in_its_namespace(
    redis_server: RedisServer,
) -> None:
    cache = Cache(redis_server.url, prefix=unique_prefix())
    counter = Counter()
    _, middleware = make_app(cache, counter)
    TestClient(middleware).get("/ns")
    assert middleware.http_cache.cache is not cache  # a raw sibling over the same backend
    key = middleware.http_cache.url_key("http://testserver/ns")
    assert cache.exists(key)  # in the user's namespace: clear() covers it
    assert cache.clear() >= 1
    cache.close()


# ----------------------------------------------------------------- per-endpoint decorator


def test_cache_response_on_a_starlette_endpoint(cache: Cache) -> None:
    calls = Counter()
    decorator = cache_response(cache, ttl=30)

    @decorator
    async def endpoint(request: Request) -> Response:
        n = calls.hit("ep")
        return PlainTextResponse(f"ep {n}", headers={"Cache-Tag": "ep"})

    @cache_response(cache, ttl=30)
    def sync_endpoint(request: Request) -> Response:
        n = calls.hit("sync")
        return PlainTextResponse(f"sync {n}")

    @cache_response(cache, ttl=30)
    async def streaming(request: Request) -> Response:
        calls.hit("stream")
        return StreamingResponse(iter([b"a", b"b"]))

    app = Starlette(
        routes=[Route("/ep", endpoint), Route("/sync", sync_endpoint), Route("/st", streaming)]
    )
    client = TestClient(app)
    first = client.get("/ep")
    assert first.headers["cache-status"].endswith("stored") and "cache-tag" not in first.headers
    assert client.get("/ep").text == "ep 1"
    assert client.head("/ep").headers["content-length"] == "4"
    assert client.get("/sync").text == client.get("/sync").text == "sync 1"
    assert client.get("/st").text == client.get("/st").text == "ab"
    assert calls["ep"] == 1 and calls["sync"] == 1 and calls["stream"] == 2
    assert decorator.invalidate_tags("ep") == 1
    assert client.get("/ep").text == "ep 2"


class Item(BaseModel):
    id: int
    name: str


def test_cache_response_on_fastapi_routes(cache: Cache) -> None:
    app = FastAPI()
    calls = Counter()

    @app.get("/items/{item_id}", response_model=Item)
    @cache_response(cache, ttl=30)
    async def read_item(item_id: int, q: str | None = None) -> dict[str, Any]:
        calls.hit("item")
        return {"id": item_id, "name": f"item {q}", "secret": "filtered by response_model"}

    @app.get("/plain")
    @cache_response(cache, ttl=30)
    def plain() -> Response:
        calls.hit("plain")
        return PlainTextResponse("plain")

    client = TestClient(app)
    first = client.get("/items/3?q=a")  # the first request after start-up is stored too
    assert first.json() == {"id": 3, "name": "item a"}
    assert first.headers["cache-status"] == "cachekit; fwd=uri-miss; stored"
    hit = client.get("/items/3?q=a")
    assert hit.headers["cache-status"].startswith("cachekit; hit")
    assert hit.json() == {"id": 3, "name": "item a"}
    assert client.get("/items/4?q=a").json() == {"id": 4, "name": "item a"}
    assert calls["item"] == 2
    assert client.get("/items/x").status_code == 422  # validation still FastAPI's
    for _ in range(3):
        assert client.get("/plain").text == "plain"
    assert calls["plain"] == 1
    # FastAPI still sees the endpoint's own parameters
    params = client.get("/openapi.json").json()["paths"]["/items/{item_id}"]["get"]["parameters"]
    assert {p["name"] for p in params} == {"item_id", "q"}


def test_cached_on_fastapi_dependencies_and_endpoints(cache: Cache) -> None:
    app = FastAPI()
    calls = Counter()

    @cache.cached(ttl=30)
    async def settings(region: str = "eu") -> dict[str, str]:
        calls.hit("settings")
        return {"region": region}

    @cache.cached(ttl=30)
    def sync_dependency(flag: bool = False) -> bool:
        calls.hit("sync")
        return flag

    @app.get("/config")
    async def config(
        conf: dict[str, str] = Depends(settings),  # noqa: B008
        flag: bool = Depends(sync_dependency),
    ) -> dict[str, Any]:
        return {**conf, "flag": flag}

    @app.get("/users/{user_id}")
    @cache.cached(ttl=30)
    async def user(user_id: int, verbose: bool = False) -> dict[str, Any]:
        calls.hit("user")
        return {"id": user_id, "verbose": verbose}

    client = TestClient(app)
    assert client.get("/config?region=us").json() == {"region": "us", "flag": False}
    assert client.get("/config?region=us").json() == {"region": "us", "flag": False}
    assert client.get("/config?region=eu&flag=true").json() == {"region": "eu", "flag": True}
    assert calls["settings"] == 2 and calls["sync"] == 2
    assert client.get("/users/7?verbose=true").json() == {"id": 7, "verbose": True}
    assert client.get("/users/7?verbose=true").json() == {"id": 7, "verbose": True}
    assert client.get("/users/8").json() == {"id": 8, "verbose": False}
    assert calls["user"] == 2
    assert client.get("/users/nope").status_code == 422
    params = client.get("/openapi.json").json()["paths"]["/users/{user_id}"]["get"]["parameters"]
    assert {p["name"] for p in params} == {"user_id", "verbose"}


# ------------------------------------------------------------ a real server on loopback


@pytest.fixture
def served(cache: Cache) -> Iterator[tuple[str, Counter, CacheMiddleware]]:
    """The middleware app served by uvicorn in a thread on a free loopback port."""
    counter = Counter()
    _, middleware = make_app(cache, counter, etag_from_body=True)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(middleware, log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.01)
    yield f"http://127.0.0.1:{port}", counter, middleware
    server.should_exit = True
    thread.join(10)
    sock.close()


def test_served_by_uvicorn(served: tuple[str, Counter, CacheMiddleware]) -> None:
    url, counter, middleware = served
    with httpx.Client(base_url=url) as client:
        first = client.get("/real?x=1")
        hit = client.get("/real?x=1")
        assert first.headers["cache-status"].endswith("stored")
        assert hit.headers["cache-status"].startswith("cachekit; hit")
        assert hit.text == first.text and hit.headers["age"] == "0"
        head = client.head("/real?x=1")
        assert head.content == b"" and head.headers["content-length"] == str(len(first.content))
        etag = first.headers["etag"]
        not_modified = client.get("/real?x=1", headers={"If-None-Match": etag})
        assert not_modified.status_code == 304 and not_modified.content == b""
        assert client.get("/stream").text == "chunk0;chunk1;chunk2;chunk3;chunk4;"
        assert client.get("/huge").content == b"x" * 30_000
        path = "/caf%C3%A9 x/" + "z" * 3000 + "?a=1&a=2"
        assert client.get(path).text == client.get(path).text
        assert client.get("/cookie").text != client.get("/cookie").text
        client.cookies.clear()  # a request carrying the cookie it set gets no shared page
        assert client.post("/items/1").text == "written"
        assert middleware.invalidate_url(f"{url}/real?x=1")
        assert client.get("/real?x=1").headers["cache-status"].endswith("stored")
    assert counter["page"] == 3 and counter["stream"] == 1 and counter["huge"] == 1


async def test_served_by_uvicorn_concurrent_cold(
    served: tuple[str, Counter, CacheMiddleware],
) -> None:
    url, counter, _ = served
    async with httpx.AsyncClient(base_url=url) as client:
        responses = await asyncio.gather(*(client.get("/cold") for _ in range(16)))
    assert {r.status_code for r in responses} == {200}
    assert len({r.text for r in responses}) == 1
    assert counter["page"] == 1


# ------------------------------------------- sessions and users: never another one's page


def _session_routes(calls: Counter) -> list[Route]:
    async def greet(request: Request) -> Response:
        calls.hit("greet")
        return PlainTextResponse(f"hello {request.session.get('user', 'guest')}")

    async def login(request: Request) -> Response:
        request.session["user"] = request.query_params["u"]
        return PlainTextResponse("ok")

    async def public(request: Request) -> Response:
        calls.hit("public")
        request.session.get("user")  # read, but the page says it is the same for all
        return PlainTextResponse("same for all", headers={"Cache-Control": "public"})

    async def plain(request: Request) -> Response:
        calls.hit("plain")
        return PlainTextResponse("no session read")

    return [
        Route("/greet", greet),
        Route("/login", login),
        Route("/public", public),
        Route("/plain", plain),
    ]


def _session_app(cache: Cache, layout: str, calls: Counter, **options: Any) -> Any:
    from starlette.middleware import Middleware
    from starlette.middleware.sessions import SessionMiddleware

    session = Middleware(SessionMiddleware, secret_key="test-secret")
    if layout == "middleware-inside-session":  # the cache never sees the Set-Cookie
        return Starlette(
            routes=_session_routes(calls),
            middleware=[session, Middleware(CacheMiddleware, cache=cache, ttl=30, **options)],
        )
    if layout == "middleware-outside-session":
        return Starlette(
            routes=_session_routes(calls),
            middleware=[Middleware(CacheMiddleware, cache=cache, ttl=30, **options), session],
        )
    if layout == "cache_response":
        decorator = cache_response(cache, ttl=30, **options)
        routes = [
            Route(r.path, decorator(r.endpoint)) if r.path != "/login" else r
            for r in _session_routes(calls)
        ]
        return Starlette(routes=routes, middleware=[session])
    assert layout == "fastapi"
    app = FastAPI()
    app.add_middleware(SessionMiddleware, secret_key="test-secret")

    @app.get("/greet")
    @cache_response(cache, ttl=30, **options)
    async def greet(request: Request) -> dict[str, str]:
        calls.hit("greet")
        return {"hello": request.session.get("user", "guest")}

    @app.get("/login")
    async def login(request: Request, u: str) -> str:
        request.session["user"] = u
        return "ok"

    @app.get("/public")
    @cache_response(cache, ttl=30, **options)
    async def public(request: Request) -> Response:
        calls.hit("public")
        request.session.get("user")
        return PlainTextResponse("same for all", headers={"Cache-Control": "public"})

    @app.get("/plain")
    @cache_response(cache, ttl=30, **options)
    async def plain() -> str:
        calls.hit("plain")
        return "no session read"

    return app


@pytest.mark.parametrize("ignored", [False, True], ids=["default", "session-cookie-ignored"])
@pytest.mark.parametrize(
    "layout",
    ["middleware-inside-session", "middleware-outside-session", "cache_response", "fastapi"],
)
def test_two_users_and_a_guest_never_see_each_others_page(
    cache: Cache, layout: str, ignored: bool
) -> None:
    """By default a request carrying a cookie gets no shared page (unless public); with the
    session cookie declared in ``ignore_cookies``, what tells users apart is the session
    the app reads, which the cache watches."""
    calls = Counter()
    options = {"ignore_cookies": ["session"]} if ignored else {}
    app = _session_app(cache, layout, calls, **options)
    alice, bob, guest = TestClient(app), TestClient(app), TestClient(app)
    assert alice.get("/login?u=alice").text.strip('"') == "ok"
    assert bob.get("/login?u=bob").text.strip('"') == "ok"
    assert alice.cookies.get("session") != bob.cookies.get("session")
    expected = {"alice": alice, "bob": bob, "guest": guest}
    for _ in range(3):
        for name in ("guest", "alice", "bob", "guest", "bob", "alice"):
            response = expected[name].get("/greet")
            assert name in response.text, (name, response.text, response.headers)
            assert "cookie" in response.headers.get("vary", "").lower()
    # the guest's page is stored (varying on Cookie), the users' pages never are
    guest_runs = 1
    assert calls["greet"] == 2 * 3 * 2 + guest_runs
    # a page that reads the session but says public is shared; one that does not read it
    # is stored as usual...
    for client in (alice, bob, guest, alice):
        assert client.get("/public").text == "same for all"
        assert client.get("/plain").text.strip('"') == "no session read"
    # ...except where the cache sees SessionMiddleware's Set-Cookie (sent to every user
    # with a session): those responses are never stored, only the guest's is; and there
    # SessionMiddleware itself reads the session, so every page varies on Cookie
    outside = layout == "middleware-outside-session"
    if not ignored:  # the users' cookies: only the public page is shared with them
        assert (calls["public"], calls["plain"]) == ((3, 4) if outside else (1, 4))
    else:
        assert (calls["public"], calls["plain"]) == ((3, 4) if outside else (1, 1))


def test_a_user_read_through_authentication_is_never_stored(cache: Cache) -> None:
    from starlette.authentication import (
        AuthCredentials,
        AuthenticationBackend,
        SimpleUser,
        UnauthenticatedUser,
    )
    from starlette.middleware import Middleware
    from starlette.middleware.authentication import AuthenticationMiddleware

    class CookieAuth(AuthenticationBackend):
        async def authenticate(self, conn: Any) -> tuple[AuthCredentials, Any] | None:
            token = conn.cookies.get("token")
            return (AuthCredentials(["user"]), SimpleUser(token)) if token else None

    calls = Counter()

    @cache_response(cache, ttl=30)
    async def me(request: Request) -> Response:
        calls.hit("me")
        user = request.user
        name = user.display_name if user.is_authenticated else "anonymous"
        return PlainTextResponse(f"you are {name}")

    app = Starlette(
        routes=[Route("/me", me)],
        middleware=[Middleware(AuthenticationMiddleware, backend=CookieAuth())],
    )
    assert isinstance(UnauthenticatedUser(), UnauthenticatedUser)
    alice = TestClient(app, cookies={"token": "alice"})
    bob = TestClient(app, cookies={"token": "bob"})
    anonymous = TestClient(app)
    for _ in range(2):
        assert anonymous.get("/me").text == "you are anonymous"
        assert alice.get("/me").text == "you are alice"
        assert bob.get("/me").text == "you are bob"
    assert calls["me"] == 1 + 2 + 2  # only the anonymous page is stored


async def test_concurrent_users_under_the_middleware_never_share_a_response(
    cache: Cache,
) -> None:
    """Cold, concurrent, and coalesced: a follower never gets a leader's personal page."""
    app = _session_app(cache, "middleware-inside-session", Counter())
    transport = httpx.ASGITransport(app=app)
    clients = [httpx.AsyncClient(transport=transport, base_url="http://t") for _ in range(6)]
    try:
        for i, client in enumerate(clients[:4]):
            await client.get("/login", params={"u": f"user{i}"})
        responses = await asyncio.gather(*(c.get("/greet") for c in clients * 3))
        for i, response in enumerate(responses):
            owner = i % len(clients)
            assert response.text == (f"hello user{owner}" if owner < 4 else "hello guest")
    finally:
        for client in clients:
            await client.aclose()


# ------------------------------------------------- nested layers: middleware + decorator


def _readme_fastapi_app(cache: Cache, calls: Counter, **options: Any) -> tuple[FastAPI, Any]:
    """The README's Starlette / FastAPI snippet: CacheMiddleware and @cache_response."""
    app = FastAPI()
    app.add_middleware(CacheMiddleware, cache=cache, ttl=60, **options)
    decorator = cache_response(cache, ttl=60, **options)

    @app.get("/products/{pid}")
    @decorator
    async def product(pid: int) -> dict[str, Any]:
        calls.hit(f"product {pid}")
        return {"pid": pid}

    return app, decorator


def _middleware_of(app: Any) -> CacheMiddleware:
    layer = app.middleware_stack
    while not isinstance(layer, CacheMiddleware):
        layer = layer.app
    return layer


def _cache_statuses(response: httpx.Response) -> list[str]:
    values = response.headers.get_list("cache-status")
    return [member.strip() for value in values for member in value.split(",")]


async def test_middleware_and_decorator_share_one_flight_and_one_cache_status(
    cache: Cache,
) -> None:
    calls = Counter()
    # old code: the inner layer waited the whole wait_timeout for the outer's lock on Redis
    app, decorator = _readme_fastapi_app(cache, calls, wait_timeout=3)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        for pid in range(1, 4):  # cold URLs after the first, one at a time
            first = await client.get(f"/products/{pid}")
            assert first.json() == {"pid": pid}
            assert _cache_statuses(first) == ["cachekit; fwd=uri-miss; stored"]
            hit = await client.get(f"/products/{pid}")
            assert len(_cache_statuses(hit)) == 1 and "hit" in _cache_statuses(hit)[0]
        cold = await asyncio.gather(*(client.get("/products/9") for _ in range(8)))
        invalid = await asyncio.gather(*(client.get("/products/x") for _ in range(8)))
    assert [calls[f"product {pid}"] for pid in (1, 2, 3, 9)] == [1, 1, 1, 1]
    assert {r.json()["pid"] for r in cold} == {9}
    assert all(len(_cache_statuses(r)) == 1 for r in cold + invalid)
    assert {r.status_code for r in invalid} == {422}
    middleware = _middleware_of(app)
    assert middleware.http_cache.lock_waits == 0 and decorator.http_cache.lock_waits == 0


def test_middleware_and_decorator_on_a_starlette_endpoint(cache: Cache) -> None:
    calls = Counter()

    @cache_response(cache, ttl=120)
    async def page(request: Request) -> Response:
        calls.hit("page")
        return PlainTextResponse("page")

    app = Starlette(routes=[Route("/page", page)])
    middleware = CacheMiddleware(app, cache=cache, ttl=60, wait_timeout=3)
    client = TestClient(middleware)
    first, hit = client.get("/page"), client.get("/page")
    assert first.headers.get_list("cache-status") == ["cachekit; fwd=uri-miss; stored"]
    # stored once, by the inner layer and with its options (ttl=120)
    assert hit.headers.get_list("cache-status")[0].startswith("cachekit; hit; ttl=1")
    assert calls["page"] == 1 and middleware.http_cache.lock_waits == 0


# ----------------------------------------------------- FastAPI: cached from the first request


@pytest.mark.parametrize("included", [False, True], ids=["app-route", "included-router"])
async def test_fastapi_first_concurrent_requests_run_the_handler_once(
    cache: Cache, included: bool
) -> None:
    from fastapi import APIRouter

    app = FastAPI()
    router = APIRouter() if included else app.router
    decorator = cache_response(cache, ttl=30)
    runs = 0

    @router.get("/items/{item_id}")
    @decorator
    async def item(item_id: int) -> dict[str, int]:
        nonlocal runs
        runs += 1
        # hold the response until the 7 other requests are parked behind this one
        deadline = time.monotonic() + 5
        while decorator.http_cache.followers() < 7 and time.monotonic() < deadline:
            await asyncio.sleep(0.001)
        return {"item": item_id}

    if included:
        app.include_router(router, prefix="/api")
    path = "/api/items/5" if included else "/items/5"
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        responses = await asyncio.gather(*(client.get(path) for _ in range(8)))
        again = await client.get(path)
    assert runs == 1
    assert all(r.json() == {"item": 5} for r in responses)
    statuses = sorted(r.headers["cache-status"] for r in responses)
    assert statuses.count("cachekit; fwd=uri-miss; stored") == 1
    assert again.headers["cache-status"].startswith("cachekit; hit")


async def test_middleware_around_the_cache_still_sees_what_the_app_puts_in_the_scope(
    cache: Cache,
) -> None:
    seen: list[Any] = []

    async def endpoint(request: Request) -> Response:
        request.scope["state"]["by_app"] = 1  # through a shared object
        request.scope["by_app"] = 2  # into the scope itself
        return PlainTextResponse("ok")

    inner = CacheMiddleware(Starlette(routes=[Route("/x", endpoint)]), cache=cache)

    async def outer(scope: dict[str, Any], receive: Any, send: Any) -> None:
        scope.setdefault("state", {})
        await inner(scope, receive, send)
        seen.append((scope.get("by_app"), scope["state"].get("by_app"), "route" in scope))
        seen.append("cachekit.handoff" in scope)

    transport = httpx.ASGITransport(app=outer)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        assert (await client.get("/x")).text == "ok"
    assert seen == [(2, 1, True), False]


async def test_invalidation_in_an_outage_raises_sync_and_async_alike(
    private_redis: RedisServer,
) -> None:
    """on_error="raise": invalidate_url and ainvalidate_url answer an outage the same way
    (the async one used to log it and return False, as if the page were simply not
    stored, while the sync one raised): one driver source, one behaviour."""
    cache = Cache(private_redis.url, prefix=unique_prefix(), on_error="raise", timeout=0.5)
    _, middleware = make_app(cache, Counter())
    private_redis.kill()
    url = "http://testserver/o"
    with pytest.raises(BackendError):
        middleware.invalidate_url(url)
    with pytest.raises(BackendError):
        await middleware.ainvalidate_url(url)
    cache.close()


def test_pages_of_the_old_generation_are_not_served(
    redis_server: RedisServer, counter: Counter
) -> None:
    """invalidate_all() by another process: the page cache misses and stores again."""
    prefix = unique_prefix()
    cache = Cache(redis_server.url, prefix=prefix, generation_poll=0)
    other = Cache(redis_server.url, prefix=prefix)
    try:
        _, middleware = make_app(cache, counter)
        client = TestClient(middleware)
        assert client.get("/g").text.startswith("page 1")
        assert client.get("/g").headers["cache-status"].startswith("cachekit; hit")
        assert other.invalidate_all()
        again = client.get("/g")
        assert again.text.startswith("page 2") and "stored" in again.headers["cache-status"]
        assert client.get("/g").headers["cache-status"].startswith("cachekit; hit")
    finally:
        cache.clear()
        cache.close()
        other.close()
