"""Rate-limit decisions: cachekit's limiter beside one raw EVALSHA round trip and `limits`.

    taskset -c 1 python benchmarks/bench_ratelimit.py [--rounds 15] [--target 0.1] [--quick]

Starts its own redis-server on a free port (pinned with this process to one CPU: the
client and the server share it, as in the other benchmarks). Every contender decides on
one identity whose allowance is never exhausted (the admitted path, which is the common
one; a refusal costs the same script). Sections:

- ``redis-sync``: the floor is redis-py's ``evalsha`` of cachekit's own GCRA script (one
  raw round trip of the same Lua); beside it ``EVALSHA "return 1"`` (the round trip with
  no work), cachekit's ``limiter.hit()`` for each algorithm, and `limits` (moving window,
  sliding-window counter, fixed window) on its RedisStorage. Commands per decision are
  counted by the server.
- ``redis-async``: ``await limiter.ahit()`` vs redis-py asyncio's ``evalsha``.
- ``memory``: cachekit's in-process limiter vs `limits`' MemoryStorage.
- ``asgi``: a Starlette app called directly (no HTTP server, no client) without a limit,
  with a handler awaiting one raw EVALSHA of the same script, and with
  ``RateLimitMiddleware`` on Redis: what the middleware adds per request.
- ``flask``: one view of a Flask app called as a WSGI app (a prepared environ, no HTTP
  server, no client): unlimited, under cachekit's ``fcache.rate_limit`` (gcra, fixed), and
  under Flask-Limiter's ``@limiter.limit`` on its Redis storage (moving window, fixed
  window, sliding-window counter), all on the same redis-server. Each contender is its
  own app with its extension's defaults (Flask-Limiter sends no headers unless told;
  cachekit sends the IETF ``RateLimit`` headers).
- ``fastapi``: one FastAPI route called as an ASGI app (as ``asgi``): unlimited, behind
  cachekit's ``RateLimitMiddleware`` and its ``Depends(RateLimit(...))``, and under
  slowapi's ``@limiter.limit`` with its Redis storage (moving window, fixed window);
  beside them a route awaiting one raw EVALSHA on redis-py asyncio (what an async round
  trip costs: slowapi's storage is redis-py sync, which blocks the event loop while it
  waits).
- ``fastapi-concurrent``: the same, CONCURRENCY requests in flight at once, as a server
  under load runs them on its one loop.

Every framework contender is admitted on every request (the limit is never reached);
requests/s is 1e9 / ns per request.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import logging
import time
import warnings
from collections.abc import Callable
from typing import Any

import redis
import redis.asyncio
from _util import (
    Contender,
    RedisProcess,
    ameasure,
    async_loop,
    default_cpu,
    machine_line,
    measure,
    pin,
    sync_loop,
    table,
)

from cachekit import Cache
from cachekit.ratelimit.rules import Rule

SECTIONS = ("redis-sync", "redis-async", "memory", "asgi", "flask", "fastapi", "fastapi-concurrent")
CONCURRENCY = 10  # requests in flight at once in the fastapi-concurrent section
RATE = "100000000/hour"  # never exhausted while the benchmark runs
# a moving window keeps one list entry per hit, up to the limit: a smaller limit, and a new
# identity every ROTATE requests, keep the list short and every request admitted
MOVING_RATE, ROTATE = "100000/hour", 50_000
TARGET = (
    "Target: a decision within 1.10x of one raw EVALSHA round trip of the same script, and "
    "at least the throughput of `limits`."
)


def _limits_contenders(url: str | None) -> list[Contender]:
    try:
        from limits import RateLimitItemPerHour, storage, strategies
    except ImportError:
        return []
    item = RateLimitItemPerHour(100_000_000)
    store: Any = storage.RedisStorage(url) if url else storage.MemoryStorage()
    rows = []
    for label, strategy in (
        ("limits moving window", strategies.MovingWindowRateLimiter),
        ("limits sliding window counter", strategies.SlidingWindowCounterRateLimiter),
        ("limits fixed window", strategies.FixedWindowRateLimiter),
    ):
        limiter = strategy(store)
        key = f"bench-{time.time_ns()}"
        if label == "limits moving window":
            # its state is one list entry per hit (up to the limit): a smaller limit keeps
            # the list bounded without ever refusing within a round
            item = RateLimitItemPerHour(100_000)
            counter = itertools.count()

            def hit(
                limiter: Any = limiter, item: Any = item, key: str = key, counter: Any = counter
            ) -> None:
                # a fresh key every 50 000 hits, so the list stays below the limit
                limiter.hit(item, f"{key}-{next(counter) // 50_000}")

            rows.append(Contender(label, sync_loop(hit)))
        else:
            rows.append(Contender(label, sync_loop(limiter.hit, item, key)))
    return rows


SCOPE: dict[str, Any] = {
    "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
    "scheme": "http", "path": "/", "raw_path": b"/", "query_string": b"", "root_path": "",
    "headers": [(b"host", b"bench")], "client": ("127.0.0.1", 5000), "server": ("bench", 80),
}  # fmt: skip


def _asgi_caller(scope: dict[str, Any], concurrency: int = 1) -> Any:
    """``call(app)``: a ``run(n)`` awaiting ``app`` n times with a copy of ``scope`` (no
    HTTP server, no client), on one event loop of its own; with ``concurrency`` > 1, in
    batches of that many requests in flight at once (``asyncio.gather``), as an ASGI
    server interleaves concurrent requests on its loop."""

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    statuses: list[int] = []

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    loop = asyncio.new_event_loop()

    def call(app: Any) -> Any:
        def run(n: int) -> int:
            batches = -(-n // concurrency)

            async def many() -> None:
                if concurrency == 1:
                    for _ in range(n):
                        await app(dict(scope), receive, send)
                    return
                for _ in range(batches):
                    await asyncio.gather(
                        *(app(dict(scope), receive, send) for _ in range(concurrency))
                    )

            statuses.clear()
            start = time.perf_counter_ns()
            loop.run_until_complete(many())
            elapsed = time.perf_counter_ns() - start
            done = n if concurrency == 1 else batches * concurrency
            _all_admitted(statuses, done)
            return elapsed * n // done  # the time of n requests

        return run

    return call


def _all_admitted(statuses: list[int], n: int) -> None:
    """Every request of a round got a 200: the admitted path is what was measured."""
    if len(statuses) != n or any(s != 200 for s in statuses):
        raise SystemExit(f"not every request was admitted: {sorted(set(statuses))}")


def _rotating_key(prefix: str) -> Callable[..., str]:
    """A key function (any arguments ignored) for a moving window: a new identity every
    ROTATE calls, so its list never fills up to the limit."""
    counter = itertools.count()

    def key(*args: Any) -> str:
        return f"{prefix}-{next(counter) // ROTATE}"

    return key


def _count_commands(server: RedisProcess, rows: list[Contender], n: int = 200) -> None:
    for c in rows:  # Redis commands per request / decision, counted by the server
        before = server.command_calls()
        c.run(n)
        c.commands = server.commands_since(before) / n


def redis_sync(server: RedisProcess) -> list[Contender]:
    client = redis.Redis.from_url(server.url)
    cache = Cache(server.url, prefix=f"bench{time.time_ns()}")
    gcra = cache.rate_limiter("bench", rate=RATE)
    key = gcra.key("user:1")
    script = gcra.rule.script()
    sha = client.script_load(script)
    noop = client.script_load("return 1")
    args = gcra.rule.args(1, 1)
    rows = [
        Contender(
            "redis-py evalsha, the same GCRA script",
            sync_loop(client.evalsha, sha, 1, key + "raw", *args),
            floor=True,
        ),
        Contender("redis-py evalsha 'return 1'", sync_loop(client.evalsha, noop, 1, key)),
    ]
    for algorithm in ("gcra", "sliding", "fixed"):
        limiter = cache.rate_limiter("bench", rate=RATE, algorithm=algorithm)
        limiter.hit("user:1")
        rows.append(
            Contender(f"cachekit limiter.hit() {algorithm}", sync_loop(limiter.hit, "user:1"))
        )
    rows += _limits_contenders(server.url)
    _count_commands(server, rows)
    return rows


async def redis_async(server: RedisProcess) -> list[Contender]:
    client = redis.asyncio.Redis.from_url(server.url)
    cache = Cache(server.url, prefix=f"bench{time.time_ns()}")
    limiter = cache.rate_limiter("bench", rate=RATE)
    await limiter.ahit("user:1")
    sha = await client.script_load(limiter.rule.script())
    args = limiter.rule.args(1, 1)
    return [
        Contender(
            "redis-py asyncio evalsha, the same GCRA script",
            async_loop(client.evalsha, sha, 1, limiter.key("user:1") + "raw", *args),
            floor=True,
        ),
        Contender("cachekit await limiter.ahit() gcra", async_loop(limiter.ahit, "user:1")),
    ]


def memory() -> list[Contender]:
    cache = Cache("memory://")
    rows = []
    for algorithm in ("gcra", "sliding", "fixed"):
        limiter = cache.rate_limiter("bench", rate=RATE, algorithm=algorithm)
        rows.append(
            Contender(
                f"cachekit memory {algorithm}",
                sync_loop(limiter.hit, "user:1"),
                floor=algorithm == "gcra",
            )
        )
    return rows + _limits_contenders(None)


def asgi(server: RedisProcess) -> list[Contender]:
    from cachekit.integrations.starlette import RateLimitMiddleware
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    async def hello(request: Any) -> PlainTextResponse:
        return PlainTextResponse("hello")

    plain = Starlette(routes=[Route("/", hello)])
    client = redis.asyncio.Redis.from_url(server.url)
    rule = Rule.make(RATE, None, "gcra")
    sha = redis.Redis.from_url(server.url).script_load(rule.script())
    args = rule.args(1, 1)

    async def raw_hello(request: Any) -> PlainTextResponse:  # the decision by hand
        await client.evalsha(sha, 1, "bench-raw", *args)
        return PlainTextResponse("hello")

    by_hand = Starlette(routes=[Route("/", raw_hello)])
    limited = Starlette(routes=[Route("/", hello)])
    cache = Cache(server.url, prefix=f"bench{time.time_ns()}")
    limited.add_middleware(RateLimitMiddleware, cache=cache, rate=RATE)
    scope = SCOPE

    call = _asgi_caller(scope)

    return [
        Contender("Starlette app, no limit", call(plain), floor=True),
        Contender("the handler awaits one raw EVALSHA of the GCRA script", call(by_hand)),
        Contender("cachekit RateLimitMiddleware (Redis)", call(limited)),
    ]


def _wsgi_caller() -> Any:
    """``call(app)``: a ``run(n)`` calling a WSGI app n times with a copy of one prepared
    GET environ (a fresh empty body each), reading and closing every response."""
    from io import BytesIO

    from werkzeug.test import EnvironBuilder

    base = EnvironBuilder(path="/", environ_base={"REMOTE_ADDR": "127.0.0.1"}).get_environ()
    statuses: list[int] = []

    def start_response(status: str, headers: Any, exc_info: Any = None) -> Any:
        statuses.append(int(status[:3]))
        return None

    def call(app: Any) -> Any:
        def run(n: int) -> int:
            statuses.clear()
            start = time.perf_counter_ns()
            for _ in itertools.repeat(None, n):
                environ = dict(base)
                environ["wsgi.input"] = BytesIO()
                body = app(environ, start_response)
                try:
                    for _chunk in body:
                        pass
                finally:
                    close = getattr(body, "close", None)
                    if close is not None:
                        close()
            elapsed = time.perf_counter_ns() - start
            _all_admitted(statuses, n)
            return elapsed

        return run

    return call


def flask(server: RedisProcess) -> list[Contender]:
    from cachekit.integrations.flask import FlaskCache
    from flask import Flask
    from flask_limiter import Limiter
    from flask_limiter.util import get_remote_address

    def make(limit: Callable[[Flask], Callable[[Any], Any]] | None = None) -> Flask:
        """One app, its view decorated by ``limit(app)`` (the extension made on the app)."""
        app = Flask(__name__)

        def hello() -> str:
            return "hello"

        app.add_url_rule("/", "hello", limit(app)(hello) if limit else hello)
        return app

    def cachekit(algorithm: str) -> Callable[[Flask], Callable[[Any], Any]]:
        def limit(app: Flask) -> Callable[[Any], Any]:
            fcache = FlaskCache(app, cache=Cache(server.url, prefix=f"bench{time.time_ns()}"))
            return fcache.rate_limit(RATE, algorithm=algorithm)

        return limit

    def flask_limiter(strategy: str) -> Callable[[Flask], Callable[[Any], Any]]:
        moving = strategy == "moving-window"

        def limit(app: Flask) -> Callable[[Any], Any]:
            limiter = Limiter(
                _rotating_key("flask-limiter") if moving else get_remote_address,
                app=app, storage_uri=server.url, strategy=strategy,
                key_prefix=f"bench{time.time_ns()}",
            )  # fmt: skip
            return limiter.limit(MOVING_RATE if moving else RATE)

        return limit

    call = _wsgi_caller()
    rows = [Contender("Flask view, no limit", call(make()), floor=True)]
    for algorithm in ("gcra", "fixed"):
        rows.append(
            Contender(f"cachekit fcache.rate_limit {algorithm}", call(make(cachekit(algorithm))))
        )
    for strategy in ("moving-window", "fixed-window", "sliding-window-counter"):
        label = strategy.replace("-", " ")
        rows.append(Contender(f"Flask-Limiter {label}", call(make(flask_limiter(strategy)))))
    _count_commands(server, rows)
    return rows


def fastapi(server: RedisProcess, concurrency: int = 1) -> list[Contender]:
    from cachekit.integrations.starlette import RateLimit, RateLimitMiddleware
    from fastapi import Depends, FastAPI, Request
    from fastapi.responses import PlainTextResponse
    from slowapi import Limiter, _rate_limit_exceeded_handler
    from slowapi.errors import RateLimitExceeded
    from slowapi.util import get_remote_address

    def cache() -> Cache:
        return Cache(server.url, prefix=f"bench{time.time_ns()}")

    def make(endpoint: Any = None, **route: Any) -> FastAPI:
        app = FastAPI()

        async def hello(request: Request) -> PlainTextResponse:
            return PlainTextResponse("hello")

        # resolved here: this module's annotations are strings, and Request is a local name
        hello.__annotations__ = {"request": Request, "return": PlainTextResponse}

        app.add_api_route("/", (endpoint or (lambda f: f))(hello), methods=["GET"], **route)
        return app

    client = redis.asyncio.Redis.from_url(server.url)
    rule = Rule.make(RATE, None, "gcra")
    sha = redis.Redis.from_url(server.url).script_load(rule.script())
    args = rule.args(1, 1)

    def by_hand(hello: Any) -> Any:  # the decision by hand: one raw round trip, then hello
        async def raw_hello(request: Any) -> Any:
            await client.evalsha(sha, 1, "bench-raw", *args)
            return await hello(request)

        raw_hello.__annotations__ = hello.__annotations__
        return raw_hello

    call = _asgi_caller(SCOPE, concurrency)
    middleware = make()
    middleware.add_middleware(RateLimitMiddleware, cache=cache(), rate=RATE)
    rows = [
        Contender("FastAPI route, no limit", call(make()), floor=True),
        Contender("the route awaits one raw EVALSHA (redis-py asyncio)", call(make(by_hand))),
        Contender("cachekit RateLimitMiddleware gcra", call(middleware)),
        Contender(
            "cachekit Depends(RateLimit(...)) gcra",
            call(make(dependencies=[Depends(RateLimit(cache(), RATE))])),
        ),
    ]
    for strategy in ("moving-window", "fixed-window"):
        moving = strategy == "moving-window"
        limiter = Limiter(
            _rotating_key("slowapi") if moving else get_remote_address,
            storage_uri=server.url, strategy=strategy, key_prefix=f"bench{time.time_ns()}",
        )  # fmt: skip
        app = make(limiter.limit(MOVING_RATE if moving else RATE))
        app.state.limiter = limiter
        app.add_exception_handler(RateLimitExceeded, _rate_limit_exceeded_handler)  # type: ignore[arg-type]
        rows.append(Contender(f"slowapi {strategy.replace('-', ' ')}", call(app)))
    _count_commands(server, rows)
    return rows


def framework_table(title: str, contenders: list[Contender]) -> str:
    """:func:`table` plus requests/s (from the median) and each limited contender's
    throughput as a share of the unlimited one's (paired by round)."""
    text = table(title, contenders, with_commands=True)
    floor = next(c for c in contenders if c.floor)
    lines = ["", "| contender | requests/s | share of the unlimited one's |", "|---|---:|---:|"]
    for c in contenders:
        name = f"**{c.name}**" if c.name.startswith("cachekit") else c.name
        lines.append(f"| {name} | {1e9 / c.median:,.0f} | {1 / c.ratio(floor):.0%} |")
    return text + "\n" + "\n".join(lines)


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
    rule = Rule.make(RATE, None, "gcra")
    print(f"<!-- rate {RATE} (interval {rule.interval_us} µs), one identity -->\n")
    with RedisProcess() as server:
        if "redis-sync" in only:
            cs = redis_sync(server)
            measure(cs, args.rounds, args.target)
            print(table("Redis, sync decision", cs, TARGET, True) + "\n", flush=True)
        if "redis-async" in only:

            async def run_async() -> list[Contender]:
                cs = await redis_async(server)
                await ameasure(cs, args.rounds, args.target)
                return cs

            cs = asyncio.run(run_async())
            print(table("Redis, async decision", cs, TARGET) + "\n", flush=True)
        if "memory" in only:
            cs = memory()
            measure(cs, args.rounds, args.target)
            print(table("Memory backend (in process)", cs) + "\n", flush=True)
        if "asgi" in only:
            cs = asgi(server)
            measure(cs, args.rounds, args.target)
            print(table("Starlette, one request through the ASGI app", cs) + "\n", flush=True)
        if "flask" in only:
            cs = flask(server)
            measure(cs, args.rounds, args.target)
            print(framework_table("Flask, one request through the WSGI app", cs) + "\n")
        if "fastapi" in only:
            cs = fastapi(server)
            measure(cs, args.rounds, args.target)
            print(framework_table("FastAPI, one request through the ASGI app", cs) + "\n")
        if "fastapi-concurrent" in only:
            cs = fastapi(server, CONCURRENCY)
            measure(cs, args.rounds, args.target)
            title = f"FastAPI, {CONCURRENCY} requests in flight at once (asyncio.gather)"
            print(framework_table(title, cs) + "\n")


if __name__ == "__main__":
    main()
