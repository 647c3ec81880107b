"""HTTP response caching under load: Starlette (uvicorn), Flask and Django (gunicorn),
uncached, with cachekit, and with the peer a user would pick (starlette-caches,
Flask-Caching, Django's cache_page on django-redis and on the built-in RedisCache), all on
one redis-server started here.

    python benchmarks/bench_http.py [--duration 5] [--connections 16] [--only django]

Each app is served by a real server pinned to CPU 0 (with redis-server); ``wrk`` runs on
CPU 1 (``apt-get install wrk``). The page handler burns ~2 ms of CPU. For each variant:
requests/s under wrk on a warm page, Redis commands per hit (``INFO commandstats`` over
200 sequential hits), and how many times the handler ran for 16 simultaneous requests
to a cold URL. Ratios are against the uncached app and the best peer of that framework.

Django (``_django_app.py``, a single-file project with no middleware): ``django-cachekit``
is cachekit's ``cache_page(lock=True)`` on ``CachekitCache`` (cachekit's HTTP cache, as
for Starlette and Flask: one GET per hit); ``django-cachekit-backend``
is Django's own ``cache_page`` on ``CachekitCache``; the peers are Django's ``cache_page``
on django-redis and on ``django.core.cache.backends.redis.RedisCache``. Django's
``cache_page`` reads two keys per hit by design (the header-key list, then the page).
"""

from __future__ import annotations

import argparse
import http.client
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _util import RedisProcess, free_port  # noqa: E402

HANDLER_SECONDS = 0.002
PAGE = ("<html><body>" + "<p>cachekit benchmark page</p>" * 60 + "</body></html>").encode()
SERVER_CPU = "0"
LOAD_CPU = "1"

STARLETTE = ["starlette-uncached", "starlette-cachekit", "starlette-caches"]
FLASK = ["flask-uncached", "flask-cachekit", "flask-cachekit-view", "flask-caching"]
DJANGO = [
    "django-uncached",
    "django-cachekit",
    "django-cachekit-backend",
    "django-redis",
    "django-builtin-redis",
]
PEERS = {"starlette-caches", "flask-caching", "django-redis", "django-builtin-redis"}
SERVERS = {
    "starlette": "uvicorn",
    "flask": "gunicorn -w 1 -k gthread --threads 16",
    "django": "gunicorn -w 1 -k gthread --threads 16",
}

_runs = 0
_runs_lock = threading.Lock()


def burn() -> bytes:
    """The page handler's work: ~2 ms of CPU."""
    global _runs
    with _runs_lock:
        _runs += 1
    end = time.perf_counter() + HANDLER_SECONDS
    while time.perf_counter() < end:
        pass
    return PAGE


# ------------------------------------------------------------------------------ the apps
def asgi_app(variant: str, redis_url: str) -> Any:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import HTMLResponse, PlainTextResponse, Response
    from starlette.routing import Route

    def page(request: Request) -> Response:  # sync: runs in the threadpool, like real I/O
        return HTMLResponse(burn())

    async def runs(request: Request) -> Response:
        return PlainTextResponse(str(_runs))

    app = Starlette(routes=[Route("/page", page), Route("/_runs", runs, methods=["POST"])])
    if variant == "starlette-cachekit":
        from cachekit.integrations.starlette import CacheMiddleware

        from cachekit import Cache

        return CacheMiddleware(app, cache=Cache(redis_url, prefix="bench-ck"), ttl=60)
    if variant == "starlette-caches":
        from aiocache import RedisCache
        from starlette_caches.middleware import CacheMiddleware as PeerMiddleware

        host, port = redis_url.split("//")[1].split("/")[0].split(":")
        cache = RedisCache(endpoint=host, port=int(port), namespace="bench-sc", ttl=60)
        return PeerMiddleware(app, cache=cache)
    return app


def wsgi_app() -> Any:
    """Gunicorn entry point: ``bench_http:wsgi_app()`` (variant and Redis from the env)."""
    from flask import Flask

    variant = os.environ["BENCH_VARIANT"]
    redis_url = os.environ["BENCH_REDIS"]
    app = Flask("bench")

    def decorate(view: Any) -> Any:
        return view

    if variant in ("flask-cachekit", "flask-cachekit-view"):
        from cachekit.integrations.flask import FlaskCache

        app.config.update(
            CACHEKIT_URL=redis_url,
            CACHEKIT_PREFIX="bench-fk",
            CACHEKIT_DEFAULT_TTL=60,
            CACHEKIT_CACHE_ALL=variant == "flask-cachekit",
        )
        fcache = FlaskCache(app)
        if variant == "flask-cachekit-view":
            decorate = fcache.cached(ttl=60)
    elif variant == "flask-caching":
        from flask_caching import Cache as FlaskCaching

        app.config.update(
            CACHE_TYPE="RedisCache", CACHE_REDIS_URL=redis_url, CACHE_KEY_PREFIX="bench-fc:"
        )
        peer = FlaskCaching(app)
        decorate = peer.cached(timeout=60, query_string=True)

    @app.get("/page")
    @decorate
    def page() -> bytes:
        return burn()

    @app.post("/_runs")
    def runs() -> str:
        return str(_runs)

    return app


def serve_asgi(variant: str, port: int, redis_url: str) -> None:
    import uvicorn

    uvicorn.run(
        asgi_app(variant, redis_url),
        host="127.0.0.1",
        port=port,
        log_level="warning",
        access_log=False,
        lifespan="off",
    )


# ---------------------------------------------------------------------------- the driver
def start_server(variant: str, port: int, redis_url: str) -> subprocess.Popen[bytes]:
    taskset = ["taskset", "-c", SERVER_CPU]
    if variant.startswith("starlette"):
        args = [sys.executable, __file__, "--serve", variant, "--port", str(port)]
        args += ["--redis", redis_url]
    else:
        gunicorn = str(Path(sys.executable).with_name("gunicorn"))
        args = [gunicorn, "-w", "1", "-k", "gthread", "--threads", "16"]
        args += ["-b", f"127.0.0.1:{port}", "--chdir", str(HERE), "--log-level", "warning"]
        django = variant.startswith("django")
        args += ["_django_app:wsgi_app()" if django else "bench_http:wsgi_app()"]
    env = {**os.environ, "BENCH_VARIANT": variant, "BENCH_REDIS": redis_url}
    process = subprocess.Popen(taskset + args, env=env)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{variant}: server exited with {process.returncode}")
        try:
            request(port, "POST", "/_runs")
            return process
        except OSError:
            time.sleep(0.05)  # polling a starting server: no event to wait on
    process.kill()
    raise RuntimeError(f"{variant}: server did not start")


def request(port: int, method: str, path: str) -> tuple[int, bytes, dict[str, str]]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request(method, path)
        response = conn.getresponse()
        return response.status, response.read(), dict(response.getheaders())
    finally:
        conn.close()


def handler_runs(port: int) -> int:
    return int(request(port, "POST", "/_runs")[1])


def commands_per_hit(port: int, redis: RedisProcess, n: int = 200) -> float:
    request(port, "GET", "/page")  # warm
    request(port, "GET", "/page")
    runs = handler_runs(port)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    before = redis.command_calls()
    for _ in range(n):
        conn.request("GET", "/page")
        response = conn.getresponse()
        assert response.read() == PAGE
    conn.close()
    commands = redis.commands_since(before)
    assert handler_runs(port) == runs, "not all hits"
    return commands / n


def cold_runs(port: int, n: int = 16) -> int:
    path = f"/page?cold={uuid.uuid4().hex}"
    barrier = threading.Barrier(n)
    bodies: list[bytes] = []

    def fetch() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.connect()
        barrier.wait()
        conn.request("GET", path)
        bodies.append(conn.getresponse().read())
        conn.close()

    before = handler_runs(port)
    threads = [threading.Thread(target=fetch) for _ in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert bodies == [PAGE] * n
    return handler_runs(port) - before


def wrk(port: int, duration: int, connections: int) -> float:
    args = ["taskset", "-c", LOAD_CPU, "wrk", "-t1", f"-c{connections}", f"-d{duration}s"]
    args.append(f"http://127.0.0.1:{port}/page")
    out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
    if "Non-2xx" in out or "Socket errors" in out:
        print(out, file=sys.stderr)
    match = re.search(r"Requests/sec:\s+([\d.]+)", out)
    assert match, out
    return float(match.group(1))


def measure(variants: list[str], redis: RedisProcess, args: argparse.Namespace) -> list[Any]:
    """All of a framework's servers up at once; wrk rounds interleaved across variants
    (best round kept), so a burst of load elsewhere on the machine hits them alike."""
    ports = {variant: free_port() for variant in variants}
    servers = []
    try:
        for variant in variants:
            servers.append(start_server(variant, ports[variant], redis.url))
        results: dict[str, dict[str, Any]] = {}
        for variant in variants:
            port = ports[variant]
            result: dict[str, Any] = {"variant": variant, "rps": 0.0}
            result["cold_runs"] = cold_runs(port)
            uncached = variant.endswith("uncached")
            result["commands"] = None if uncached else commands_per_hit(port, redis)
            wrk(port, 1, args.connections)  # warm-up
            results[variant] = result
        for _ in range(args.rounds):
            for variant in variants:
                rps = wrk(ports[variant], args.duration, args.connections)
                results[variant]["rps"] = max(results[variant]["rps"], rps)
        return [results[variant] for variant in variants]
    finally:
        for server in servers:
            server.terminate()
            server.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=5, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=3, help="wrk runs per variant (best)")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--only", choices=["starlette", "flask", "django"])
    parser.add_argument("--serve")
    parser.add_argument("--port", type=int)
    parser.add_argument("--redis")
    args = parser.parse_args()
    if args.serve:
        serve_asgi(args.serve, args.port, args.redis)
        return
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is missing: apt-get install -y wrk")
    os.sched_setaffinity(0, {int(SERVER_CPU)})  # redis-server inherits CPU 0
    groups = {"starlette": STARLETTE, "flask": FLASK, "django": DJANGO}
    if args.only:
        groups = {args.only: groups[args.only]}
    print(f"handler: {HANDLER_SECONDS * 1000:.0f} ms CPU; servers + redis on CPU {SERVER_CPU}; ")
    load = f"wrk -t1 -c{args.connections} -d{args.duration}s"
    print(f"{load} on CPU {LOAD_CPU}, best of {args.rounds} interleaved runs")
    with RedisProcess() as redis:
        for framework, variants in groups.items():
            results = measure(variants, redis, args)
            uncached = results[0]["rps"]
            best_peer = max(r["rps"] for r in results if r["variant"] in PEERS)
            print(f"\n{framework} ({SERVERS[framework]})")
            header = f"{'variant':<25}{'req/s':>9}{'x uncached':>12}{'x best peer':>13}"
            header += f"{'redis cmds/hit':>16}{'16 cold -> runs':>17}"
            print(header)
            for r in results:
                commands = "-" if r["commands"] is None else f"{r['commands']:.2f}"
                print(
                    f"{r['variant']:<25}{r['rps']:>9.0f}{r['rps'] / uncached:>12.2f}"
                    f"{r['rps'] / best_peer:>13.2f}{commands:>16}{r['cold_runs']:>17}"
                )


if __name__ == "__main__":
    main()
