"""Starlette's SessionMiddleware replaced: request.session in the cache's backend, with
real concurrency (asyncio tasks through httpx against the ASGI app)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import pytest
from cachekit.integrations.starlette import SessionMiddleware
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute
from starlette.types import Message, Receive, Scope, Send
from starlette.websockets import WebSocket

from cachekit import Cache
from cachekit.testing.servers import RedisServer
from tests.conftest import unique_prefix


@pytest.fixture(params=["memory", "redis"])
def cache(request: pytest.FixtureRequest) -> Iterator[Cache]:
    if request.param == "memory":
        made = Cache("memory://", prefix=unique_prefix())
    else:
        server: RedisServer = request.getfixturevalue("redis_server")
        made = Cache(server.url, prefix=unique_prefix())
    yield made
    made.close()


class Gate:
    """Holds /slow requests inside the handler (session loaded) until opened."""

    def __init__(self) -> None:
        self.inside = 0
        self.all_inside = asyncio.Event()
        self.open = asyncio.Event()
        self.expected = 0


def make_app(cache: Cache, gate: Gate | None = None, **options: object) -> Starlette:
    async def set_field(request: Request) -> JSONResponse:
        request.session[request.path_params["name"]] = request.path_params["value"]
        return JSONResponse({"ok": True})

    async def show(request: Request) -> JSONResponse:
        return JSONResponse(dict(request.session))

    async def login(request: Request) -> JSONResponse:
        request.session["user"] = "alice"
        request.session.regenerate()  # type: ignore[attr-defined]
        return JSONResponse({"ok": True})

    async def logout(request: Request) -> JSONResponse:
        request.session.clear()
        return JSONResponse({"ok": True})

    async def slow(request: Request) -> JSONResponse:
        assert gate is not None
        gate.inside += 1
        if gate.inside == gate.expected:
            gate.all_inside.set()
        await gate.open.wait()
        request.session[request.path_params["name"]] = 1
        return JSONResponse({"ok": True})

    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_json(dict(websocket.session))
        await websocket.close()

    app = Starlette(
        routes=[
            Route("/set/{name}/{value}", set_field, methods=["POST"]),
            Route("/show", show),
            Route("/login", login, methods=["POST"]),
            Route("/logout", logout, methods=["POST"]),
            Route("/slow/{name}", slow, methods=["POST"]),
            WebSocketRoute("/ws", ws),
        ]
    )
    app.add_middleware(SessionMiddleware, cache=cache, **options)  # type: ignore[arg-type]
    return app


def client_for(app: Starlette) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="https://test")


def test_cookie_flags_and_round_trip(cache: Cache) -> None:
    async def main() -> None:
        async with client_for(make_app(cache)) as client:
            response = await client.post("/set/a/1")
            set_cookie = response.headers["set-cookie"]
            assert "HttpOnly" in set_cookie and "Secure" in set_cookie
            assert "SameSite=Lax" in set_cookie and "Path=/" in set_cookie
            assert "Cookie" in response.headers["vary"]
            assert (await client.get("/show")).json() == {"a": "1"}
            again = await client.get("/show")  # nothing changed: no cookie sent again
            assert "set-cookie" not in again.headers

    asyncio.run(main())


def test_secure_off_for_http_development(cache: Cache) -> None:
    async def main() -> None:
        app = make_app(cache, https_only=False, same_site="strict", session_cookie="sid")
        async with client_for(app) as client:
            set_cookie = (await client.post("/set/a/1")).headers["set-cookie"]
            assert set_cookie.startswith("sid=") and "Secure" not in set_cookie
            assert "SameSite=Strict" in set_cookie

    asyncio.run(main())


def test_no_cookie_no_write(cache: Cache) -> None:
    async def main() -> None:
        async with client_for(make_app(cache)) as client:
            response = await client.get("/show")
            assert response.json() == {} and "set-cookie" not in response.headers

    asyncio.run(main())


def test_parallel_requests_lose_no_update(cache: Cache) -> None:
    async def main() -> None:
        async with client_for(make_app(cache)) as client:
            await client.post("/set/seed/0")
            for batch in range(2):  # 2 x 100 concurrent requests, distinct fields
                results = await asyncio.gather(
                    *(client.post(f"/set/f{batch}-{n}/{n}") for n in range(100))
                )
                assert all(r.status_code == 200 for r in results)
            session = (await client.get("/show")).json()
            assert len(session) == 201 and session["f1-99"] == "99"

    asyncio.run(main())


def test_in_flight_writes_after_logout_resurrect_nothing(cache: Cache) -> None:
    async def main() -> None:
        gate = Gate()
        gate.expected = 50
        app = make_app(cache, gate)
        async with client_for(app) as client:
            await client.post("/set/user/alice")
            cookie = client.cookies["session"]
            in_flight = [asyncio.create_task(client.post(f"/slow/late{n}")) for n in range(50)]
            await gate.all_inside.wait()  # all 50 loaded the session
            logout = await client.post("/logout")
            assert "Max-Age=0" in logout.headers["set-cookie"]
            gate.open.set()
            await asyncio.gather(*in_flight)
        async with client_for(app) as fresh:
            fresh.cookies.set("session", cookie)
            assert (await fresh.get("/show")).json() == {}  # nothing came back
        key = make_store_key(cache, cookie)
        assert cache._backend.exists(key) is False

    asyncio.run(main())


def make_store_key(cache: Cache, session_id: str) -> str:
    from cachekit.sessions import SessionStore

    return SessionStore(cache).key(session_id)


def test_fixation_and_tampered_cookies(cache: Cache) -> None:
    async def main() -> None:
        app = make_app(cache)
        for forged in ["A" * 43, "garbage", "x" * 5000, "%00%ff", ""]:
            async with client_for(app) as client:
                client.cookies.set("session", forged)
                assert (await client.get("/show")).json() == {}
                response = await client.post("/set/user/victim")
                new = response.cookies.get("session")
                assert new is not None and new != forged
        async with client_for(app) as attacker:
            attacker.cookies.set("session", "A" * 43)
            assert (await attacker.get("/show")).json() == {}

    asyncio.run(main())


def test_regenerate_on_login(cache: Cache) -> None:
    async def main() -> None:
        app = make_app(cache)
        async with client_for(app) as client:
            await client.post("/set/cart/3")
            before = client.cookies["session"]
            await client.post("/login")
            after = client.cookies["session"]
            assert after != before
            assert (await client.get("/show")).json() == {"cart": "3", "user": "alice"}
        async with client_for(app) as old:
            old.cookies.set("session", before)
            assert (await old.get("/show")).json() == {}

    asyncio.run(main())


def test_websocket_scope_gets_the_session_and_lifespan_passes(cache: Cache) -> None:
    seen: list[object] = []

    async def inner(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(scope.get("session"))

    async def main() -> None:
        async with client_for(make_app(cache)) as client:
            await client.post("/set/a/1")
            cookie = client.cookies["session"]
        middleware = SessionMiddleware(inner, cache=cache)

        async def receive() -> Message:
            return {"type": "websocket.connect"}

        async def send(message: Message) -> None:
            raise AssertionError("nothing sent")

        headers = [(b"cookie", f"session={cookie}".encode())]
        await middleware({"type": "websocket", "headers": headers}, receive, send)
        await middleware({"type": "lifespan"}, receive, send)

    asyncio.run(main())
    assert seen == [{"a": "1"}, None]


def test_redis_down_serves_an_empty_session_and_keeps_the_cookie(
    private_redis: RedisServer,
) -> None:
    cache = Cache(private_redis.url, prefix=unique_prefix(), timeout=0.5)

    async def main() -> None:
        async with client_for(make_app(cache)) as client:
            await client.post("/set/a/1")
            private_redis.stop()
            response = await client.get("/show")
            assert response.status_code == 200 and response.json() == {}
            assert "set-cookie" not in response.headers
            assert (await client.post("/set/b/2")).status_code == 200

    asyncio.run(main())
    cache.close()


def test_two_users_never_see_each_other(cache: Cache) -> None:
    async def main() -> None:
        app = make_app(cache)
        async with client_for(app) as alice, client_for(app) as bob:

            async def act(client: httpx.AsyncClient, who: str) -> None:
                await client.post(f"/set/user/{who}")
                for n in range(20):
                    await client.post(f"/set/n{n}/{who}")
                    assert set((await client.get("/show")).json().values()) == {who}

            await asyncio.gather(act(alice, "alice"), act(bob, "bob"))
            assert alice.cookies["session"] != bob.cookies["session"]

    asyncio.run(main())


def test_frozen_redis_answers_within_the_timeout(private_redis: RedisServer) -> None:
    import time

    cache = Cache(private_redis.url, prefix=unique_prefix(), timeout=0.3)

    async def main() -> None:
        async with client_for(make_app(cache)) as client:
            await client.post("/set/a/1")
            private_redis.freeze()
            try:
                start = time.monotonic()
                response = await client.get("/show")
                assert response.status_code == 200 and response.json() == {}
                assert time.monotonic() - start < 2.0
                again = time.monotonic()  # the circuit is open: no wait at all
                assert (await client.get("/show")).json() == {}
                assert time.monotonic() - again < 0.2
            finally:
                private_redis.thaw()

    asyncio.run(main())
    cache.close()
