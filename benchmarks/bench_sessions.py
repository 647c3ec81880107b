"""Server-side sessions: cachekit's middleware beside Starlette's cookie sessions,
starsessions and Flask-Session, per request, with Redis commands per request.

    taskset -c 1 python benchmarks/bench_sessions.py [--rounds 15] [--target 0.1] [--quick]

Starts its own redis-server on a free port (pinned with this process to one CPU). Each
request carries the cookie of a session holding a few keys (a user id, roles, a cart) and
either only reads it (``read``) or changes one key (``write``). The apps are called
directly (ASGI / WSGI, no HTTP server, no client). Commands per request are counted by
the server (``INFO commandstats``) over 1000 requests.

- ``starlette``: a Starlette app without sessions (floor), Starlette's cookie
  ``SessionMiddleware`` (signs and re-encodes the whole session into the cookie on every
  change), cachekit's ``SessionMiddleware`` on Redis, starsessions' ``RedisStore``.
- ``flask``: Flask's cookie session (floor), cachekit's ``CachekitSessionInterface`` on
  Redis, Flask-Session's ``RedisSessionInterface``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import time
import warnings
from collections.abc import Callable
from typing import Any

import redis
from _util import Contender, RedisProcess, default_cpu, machine_line, measure, pin, table

from cachekit import Cache

SECTIONS = ("starlette", "flask")
SEED = {"user_id": 42, "roles": ["admin", "dev"], "cart": [1, 2, 3]}
N_COUNT = 1000  # requests over which commands are counted


# -- Starlette ----------------------------------------------------------------------------
def _asgi_apps(server: RedisProcess) -> dict[str, Any]:
    from cachekit.integrations.starlette import SessionMiddleware
    from starlette.applications import Starlette
    from starlette.middleware.sessions import SessionMiddleware as CookieSessions
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    counter = iter(range(10**12))

    def session_of(request: Any) -> Any:  # the floor has no middleware: a plain dict
        return request.scope.setdefault("session", {})

    async def seed(request: Any) -> PlainTextResponse:
        session_of(request).update(SEED)
        return PlainTextResponse("seeded")

    async def read(request: Any) -> PlainTextResponse:
        return PlainTextResponse(str(session_of(request).get("user_id")))

    async def write(request: Any) -> PlainTextResponse:
        session_of(request)["n"] = next(counter)
        return PlainTextResponse("ok")

    def app() -> Starlette:
        return Starlette(
            routes=[Route("/seed", seed), Route("/read", read), Route("/write", write)]
        )

    apps: dict[str, Any] = {"Starlette app, no sessions": app()}
    cookie = app()
    cookie.add_middleware(CookieSessions, secret_key="bench-secret")
    apps["Starlette SessionMiddleware (signed cookie)"] = cookie
    ours = app()
    cache = Cache(server.url, prefix=f"bench{time.time_ns()}")
    ours.add_middleware(SessionMiddleware, cache=cache)
    apps["cachekit SessionMiddleware (Redis)"] = ours
    try:
        from starsessions import SessionAutoloadMiddleware
        from starsessions import SessionMiddleware as StarSessions
        from starsessions.stores.redis import RedisStore
    except ImportError:  # not installed: pip install starsessions
        return apps
    star = app()
    star.add_middleware(SessionAutoloadMiddleware)
    star.add_middleware(StarSessions, store=RedisStore(server.url), lifetime=3600)
    apps["starsessions RedisStore"] = star
    return apps


def starlette(server: RedisProcess) -> tuple[list[Contender], list[Contender]]:
    loop = asyncio.new_event_loop()

    def scope(path: str, cookie: bytes | None) -> dict[str, Any]:
        headers = [(b"host", b"bench")] + ([(b"cookie", cookie)] if cookie else [])
        return {
            "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
            "method": "GET", "scheme": "https", "path": path, "raw_path": path.encode(),
            "query_string": b"", "root_path": "", "headers": headers,
            "client": ("127.0.0.1", 5000), "server": ("bench", 443),
        }  # fmt: skip

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def call(app: Any, path: str, cookie: bytes | None) -> list[bytes]:
        cookies: list[bytes] = []

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                cookies.extend(v for k, v in message.get("headers", []) if k == b"set-cookie")

        await app(scope(path, cookie), receive, send)
        return cookies

    def runner(app: Any, path: str, cookie: bytes | None) -> Callable[[int], int]:
        def run(n: int) -> int:
            async def many() -> None:
                for _ in range(n):
                    await app(scope(path, cookie), receive, _drop)

            start = time.perf_counter_ns()
            loop.run_until_complete(many())
            return time.perf_counter_ns() - start

        return run

    sections: tuple[list[Contender], list[Contender]] = ([], [])
    for name, app in _asgi_apps(server).items():
        set_cookies = loop.run_until_complete(call(app, "/seed", None))
        cookie = set_cookies[0].split(b";")[0] if set_cookies else None
        for rows, path in zip(sections, ("/read", "/write")):
            contender = Contender(name, runner(app, path, cookie), floor="no sessions" in name)
            _count(server, contender)
            rows.append(contender)
    return sections


def _count(server: RedisProcess, contender: Contender) -> None:
    """Commands per request (those run inside a script count too), and for scripts how
    many round trips they took (one EVALSHA each)."""
    before = server.command_calls()
    contender.run(N_COUNT)
    contender.commands = server.commands_since(before) / N_COUNT
    scripts = (server.command_calls().get("evalsha", 0) - before.get("evalsha", 0)) / N_COUNT
    if scripts:
        contender.note = f"round trips (EVALSHA): {scripts:g}, the other commands run inside"


async def _drop(message: dict[str, Any]) -> None:
    return None


# -- Flask --------------------------------------------------------------------------------
def flask(server: RedisProcess) -> tuple[list[Contender], list[Contender]]:
    from cachekit.integrations.flask import CachekitSessionInterface
    from flask import Flask, session
    from werkzeug.test import EnvironBuilder

    counter = iter(range(10**12))

    def app(name: str) -> Flask:
        made = Flask(name)
        made.secret_key = "bench-secret"

        @made.get("/seed")
        def seed() -> str:
            session.update(SEED)
            return "seeded"

        @made.get("/read")
        def read() -> str:
            return str(session.get("user_id"))

        @made.get("/write")
        def write() -> str:
            session["n"] = next(counter)
            return "ok"

        return made

    apps = {"Flask cookie session": app("plain")}
    ours = app("ours")
    ours.session_interface = CachekitSessionInterface(
        Cache(server.url, prefix=f"bench{time.time_ns()}")
    )
    apps["cachekit CachekitSessionInterface (Redis)"] = ours
    try:
        from flask_session import Session as FlaskSession
    except ImportError:  # not installed: pip install flask-session
        FlaskSession = None
    if FlaskSession is not None:
        theirs = app("theirs")
        theirs.config.update(SESSION_TYPE="redis", SESSION_REDIS=redis.Redis.from_url(server.url))
        FlaskSession(theirs)
        apps["Flask-Session RedisSessionInterface"] = theirs

    def environ(path: str, cookie: str | None) -> dict[str, Any]:
        headers = {"Cookie": cookie} if cookie else {}
        return EnvironBuilder(path=path, base_url="https://bench/", headers=headers).get_environ()

    def runner(made: Flask, path: str, cookie: str | None) -> Callable[[int], int]:
        base = environ(path, cookie)
        wsgi = made.wsgi_app

        def start_response(status: str, headers: Any, exc_info: Any = None) -> None:
            return None

        def run(n: int) -> int:
            start = time.perf_counter_ns()
            for _ in range(n):
                for _chunk in wsgi(dict(base), start_response):
                    pass
            return time.perf_counter_ns() - start

        return run

    sections: tuple[list[Contender], list[Contender]] = ([], [])
    for name, made in apps.items():
        response = made.test_client().get("/seed", base_url="https://bench/")
        header = response.headers.get("Set-Cookie")
        cookie = header.split(";")[0] if header else None
        for rows, path in zip(sections, ("/read", "/write")):
            contender = Contender(name, runner(made, path, cookie), floor="cookie" in name)
            _count(server, contender)
            rows.append(contender)
    return sections


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cpu", type=int, default=default_cpu(), help="CPU to pin to (-1: none)")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--target", type=float, default=0.1, help="seconds per contender per round")
    parser.add_argument("--only", default=",".join(SECTIONS), help="comma-separated sections")
    parser.add_argument("--quick", action="store_true", help="3 rounds of 0.05 s")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.target = 3, 0.05
    only = set(args.only.split(","))
    warnings.simplefilter("ignore")
    logging.basicConfig(level=logging.ERROR)
    pinned = pin(args.cpu)
    print(f"<!-- {machine_line()}; {pinned}; {args.rounds} rounds x ~{args.target} s -->\n")
    with RedisProcess() as server:
        for section, build in (("starlette", starlette), ("flask", flask)):
            if section not in only:
                continue
            reads, writes = build(server)
            for kind, rows in (("reads the session", reads), ("changes one key", writes)):
                measure(rows, args.rounds, args.target)
                title = f"{section.title()}, one request that {kind}"
                print(table(title, rows, with_commands=True) + "\n", flush=True)
                floor = next(c for c in rows if c.floor)
                for c in rows:
                    print(f"<!-- {c.name}: {1e9 / c.median:,.0f} requests/s; "
                          f"{c.ratio(floor):.2f}x the floor -->")  # fmt: skip
                print()


if __name__ == "__main__":
    main()
