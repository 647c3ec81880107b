"""Flask adapter: FlaskCache views (``cached`` / ``cached_view``), the app-wide cache
(``CACHEKIT_CACHE_ALL``) and function caching, through Flask's test client."""

from __future__ import annotations

import functools
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from cachekit.integrations.flask import FlaskCache
from flask import Flask, Response, request, session, stream_with_context
from werkzeug.middleware.proxy_fix import ProxyFix
from werkzeug.test import EnvironBuilder

from cachekit import Cache, ConfigurationError
from cachekit.testing.servers import RedisServer
from tests.conftest import unique_prefix


class Counter:
    def __init__(self) -> None:
        self.calls: dict[str, int] = {}
        self._lock = threading.Lock()

    def hit(self, name: str) -> int:
        with self._lock:
            self.calls[name] = self.calls.get(name, 0) + 1
            return self.calls[name]

    def __getitem__(self, name: str) -> int:
        return self.calls.get(name, 0)


@pytest.fixture(params=["memory", "redis"])
def cache(request: pytest.FixtureRequest) -> Iterator[Cache]:
    if request.param == "memory":
        made = Cache("memory://", prefix=unique_prefix())
    else:  # orjson by default: the extension stores raw bytes beside it
        made = Cache(request.getfixturevalue("redis_server").url, prefix=unique_prefix())
    yield made
    made.clear()
    made.close()


def make_app(cache: Cache, mode: str, counter: Counter, **http: Any) -> tuple[Flask, FlaskCache]:
    """``mode``: "view" (each view under ``@fcache.cached``) or "all" (CACHEKIT_CACHE_ALL)."""
    app = Flask(__name__)
    app.secret_key = "test"
    app.config["CACHEKIT_CACHE_ALL"] = mode == "all"
    app.config["CACHEKIT_DEFAULT_TTL"] = 30
    app.config["CACHEKIT_HTTP"] = {"max_body_size": 20_000, "etag_from_body": True, **http}
    fcache = FlaskCache(app, cache=cache)

    def view(func: Any) -> Any:
        return fcache.cached()(func) if mode == "view" else func

    @app.get("/vary")
    @view
    def vary() -> Response:
        n = counter.hit("vary")
        lang = request.headers.get("Accept-Language", "none")
        return Response(f"{lang} {n}", headers={"Vary": "Accept-Language"})

    @app.get("/cookie")
    @view
    def cookie() -> Response:
        n = counter.hit("cookie")
        response = Response(f"cookie {n}")
        response.set_cookie("sid", "abc")
        return response

    @app.get("/login")
    @view
    def login() -> str:
        n = counter.hit("login")
        session["user"] = "ada"
        return f"login {n}"

    @app.get("/hello")
    @view
    def hello() -> str:
        n = counter.hit("hello")
        return f"hello {session.get('user', 'anonymous')} {n}"

    @app.get("/huge")
    @view
    def huge() -> Response:
        counter.hit("huge")
        return Response(b"x" * 30_000, mimetype="application/octet-stream")

    @app.get("/stream")
    @view
    def stream() -> Response:
        counter.hit("stream")

        def chunks() -> Iterator[str]:
            for i in range(5):
                yield f"chunk{i};"

        return Response(stream_with_context(chunks()), mimetype="text/plain")

    @app.get("/boom")
    @view
    def boom() -> str:
        counter.hit("boom")
        raise RuntimeError("boom")

    @app.route("/items/<path:rest>", methods=["POST", "DELETE"])
    def write(rest: str) -> str:
        counter.hit("write")
        return "written"

    @app.get("/")
    @app.get("/<path:rest>")
    @view
    def page(rest: str = "") -> Response:
        n = counter.hit("page")
        headers = {k[2:]: v for k, v in request.args.items(multi=True) if k.startswith("h-")}
        body = f"page {n} {request.path} {sorted(request.args.items(multi=True))}"
        return Response(body, headers=headers)

    return app, fcache


@pytest.fixture
def counter() -> Counter:
    return Counter()


@pytest.fixture(params=["view", "all"])
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def setup(cache: Cache, mode: str, counter: Counter) -> tuple[Any, FlaskCache, Flask]:
    app, fcache = make_app(cache, mode, counter)
    return app.test_client(), fcache, app


def status(response: Any) -> str:
    return str(response.headers.get("Cache-Status", ""))


def test_miss_then_hit(setup: tuple[Any, FlaskCache, Flask], counter: Counter) -> None:
    client, _, _ = setup
    first = client.get("/a?x=1")
    assert first.status_code == 200
    assert status(first) == "cachekit; fwd=uri-miss; stored"
    second = client.get("/a?x=1")
    assert second.data == first.data == b"page 1 /a [('x', '1')]"
    assert status(second).startswith("cachekit; hit; ttl=")
    assert second.headers["Age"] == "0"
    assert second.headers["ETag"] == first.headers["ETag"]
    assert second.headers["Content-Type"] == first.headers["Content-Type"]
    assert client.get("/a?x=2").data.startswith(b"page 2")
    assert counter["page"] == 2


def test_head_is_answered_from_the_get_entry(
    setup: tuple[Any, FlaskCache, Flask], counter: Counter
) -> None:
    client, _, _ = setup
    body = client.get("/h").data
    head = client.head("/h")
    assert head.status_code == 200 and head.data == b""
    assert head.headers["Content-Length"] == str(len(body))
    assert "hit" in status(head)
    assert counter["page"] == 1


def test_conditional_requests_get_304(setup: tuple[Any, FlaskCache, Flask]) -> None:
    client, _, _ = setup
    etag = client.get("/c").headers["ETag"]
    not_modified = client.get("/c", headers={"If-None-Match": etag})
    assert not_modified.status_code == 304 and not_modified.data == b""
    assert client.get("/c", headers={"If-None-Match": '"nope"'}).status_code == 200
    lm = "Wed, 21 Oct 2015 07:28:00 GMT"
    client.get("/lm", query_string={"h-Last-Modified": lm})
    since = client.get(
        "/lm", query_string={"h-Last-Modified": lm}, headers={"If-Modified-Since": lm}
    )
    assert since.status_code == 304


def test_cache_tag_is_stripped_stored_and_purged(
    setup: tuple[Any, FlaskCache, Flask], counter: Counter
) -> None:
    client, fcache, app = setup
    tagged = {"h-Cache-Tag": "products, product-1"}
    first = client.get("/p/1", query_string=tagged)
    assert "Cache-Tag" not in first.headers
    client.get("/p/2", query_string={"h-Cache-Tag": "products"})
    client.get("/other", query_string={"h-Cache-Tag": "other"})
    assert fcache.invalidate_tags("product-1", app=app) == 1
    assert status(client.get("/p/1", query_string=tagged)).endswith("stored")
    with app.app_context():  # the current app's state
        assert fcache.invalidate_tags("products") == 2
    client.get("/p/2", query_string={"h-Cache-Tag": "products"})
    assert "hit" in status(client.get("/other", query_string={"h-Cache-Tag": "other"}))
    assert counter["page"] == 5


def test_invalidate_by_url_and_by_path_pattern(
    setup: tuple[Any, FlaskCache, Flask], counter: Counter
) -> None:
    client, fcache, app = setup
    for path in ("/products/1", "/products/2?page=3", "/products", "/blog/1"):
        client.get(path)
    assert fcache.invalidate_url("http://localhost/products/1", app=app) is True
    assert fcache.invalidate_url("http://localhost/products/1", app=app) is False
    assert fcache.invalidate_path("/products/*", app=app) == 1
    assert fcache.invalidate_path("/products", host="localhost", app=app) == 1
    for path in ("/products/1", "/products/2?page=3", "/products", "/blog/1"):
        client.get(path)
    assert counter["page"] == 4 + 3


def test_unsafe_method_invalidates_the_url(cache: Cache, counter: Counter) -> None:
    app, _ = make_app(cache, "all", counter)
    client = app.test_client()
    client.get("/items/9")
    assert "hit" in status(client.get("/items/9"))
    assert client.post("/items/9").data == b"written"
    assert status(client.get("/items/9")).endswith("stored")
    assert counter["page"] == 2


@pytest.mark.parametrize(
    ("params", "headers"),
    [
        ({"h-Cache-Control": "no-store"}, {}),
        ({"h-Cache-Control": "private, max-age=60"}, {}),
        ({"h-Cache-Control": "no-cache"}, {}),
        ({"h-Vary": "*"}, {}),
        ({}, {"Authorization": "Bearer x"}),
        ({}, {"Cache-Control": "no-store"}),
    ],
    ids=["no-store", "private", "no-cache", "vary-star", "authorization", "request-no-store"],
)
def test_uncacheable_responses_are_not_stored(
    setup: tuple[Any, FlaskCache, Flask],
    counter: Counter,
    params: dict[str, str],
    headers: dict[str, str],
) -> None:
    client, _, _ = setup
    for _ in range(2):
        response = client.get("/u", query_string=params, headers=headers)
        assert status(response) == "cachekit; fwd=uri-miss"
    assert counter["page"] == 2


def test_cookies_and_sessions(setup: tuple[Any, FlaskCache, Flask], counter: Counter) -> None:
    client, _, _ = setup
    assert client.get("/cookie").data == b"cookie 1"
    assert client.get("/cookie").data == b"cookie 2"  # Set-Cookie: never stored
    assert client.get("/login").data == b"login 1"
    assert client.get("/login").data == b"login 2"  # the session cookie is set: not stored
    # reading the session adds Vary: Cookie, so each session has its own entry
    assert client.get("/hello").data == b"hello ada 1"
    assert client.get("/hello").headers["Vary"] == "Cookie"
    assert client.get("/hello").data == b"hello ada 1"
    other = client.application.test_client()
    assert other.get("/hello").data == b"hello anonymous 2"


def test_authorization_is_served_only_public_entries(setup: tuple[Any, FlaskCache, Flask]) -> None:
    client, _, _ = setup
    auth = {"Authorization": "Bearer secret"}
    client.get("/shared")
    assert status(client.get("/shared", headers=auth)) == "cachekit; fwd=request"
    public = {"h-Cache-Control": "public, max-age=60"}
    client.get("/pub", query_string=public, headers=auth)
    assert "hit" in status(client.get("/pub", query_string=public, headers=auth))


def test_vary_on_a_header_the_request_lacks(
    setup: tuple[Any, FlaskCache, Flask], counter: Counter
) -> None:
    client, _, _ = setup
    assert client.get("/vary").data == b"none 1"
    assert client.get("/vary").data == b"none 1"
    assert client.get("/vary", headers={"Accept-Language": ""}).data == b" 2"
    assert client.get("/vary", headers={"Accept-Language": "fr"}).data == b"fr 3"
    assert client.get("/vary", headers={"Accept-Language": "fr"}).data == b"fr 3"
    assert client.get("/vary").data == b"none 1"
    assert counter["vary"] == 3


def test_unicode_long_and_space_urls_and_header_values(
    setup: tuple[Any, FlaskCache, Flask], counter: Counter
) -> None:
    client, _, _ = setup
    paths = [
        "/caf%C3%A9/%E2%9C%93?q=%F0%9F%98%80",
        "/café/✓?q=😀",  # the same URL, sent unencoded: the same entry
        "/with%20space/a%20b?x=a%20b&y=c+d",
        "/long/" + "a" * 5000 + "?q=" + "b" * 3000,
    ]
    for path in paths:
        first = client.get(path)
        second = client.get(path)
        assert first.status_code == second.status_code == 200
        assert second.data == first.data
        assert "hit" in status(second)
    assert counter["page"] == len(paths) - 1
    assert "café/✓" in client.get(paths[0]).get_data(as_text=True)
    value = "caf\u00e9 a  b " + "v" * 4000  # latin-1 on the wire
    first = client.get("/hdr", query_string={"h-X-Note": value})
    second = client.get("/hdr", query_string={"h-X-Note": value})
    assert "hit" in status(second)
    assert second.headers["X-Note"] == first.headers["X-Note"] == value
    long_lang = "fr-" + "x" * 6000 + " \u00e9"
    assert client.get("/vary", headers={"Accept-Language": long_lang}).data.endswith(b" 1")
    assert client.get("/vary", headers={"Accept-Language": long_lang}).data.endswith(b" 1")


def test_duplicate_query_parameters(setup: tuple[Any, FlaskCache, Flask], counter: Counter) -> None:
    client, _, _ = setup
    a = client.get("/q?a=1&a=2&b=3")
    assert "hit" in status(client.get("/q?b=3&a=1&a=2"))
    swapped = client.get("/q?a=2&a=1&b=3")
    assert status(swapped).endswith("stored") and swapped.data != a.data
    assert counter["page"] == 2


def test_huge_and_streaming_responses_pass_through_uncached(
    setup: tuple[Any, FlaskCache, Flask], counter: Counter
) -> None:
    client, _, _ = setup
    for _ in range(2):
        huge = client.get("/huge")
        assert huge.data == b"x" * 30_000 and status(huge) == "cachekit; fwd=uri-miss"
        streamed = client.get("/stream")
        assert streamed.data == b"chunk0;chunk1;chunk2;chunk3;chunk4;"
        assert status(streamed) == "cachekit; fwd=uri-miss"
    assert counter["huge"] == counter["stream"] == 2


def test_streaming_is_not_buffered(cache: Cache) -> None:
    """The app-wide cache hands a streamed body on lazily: the generator has not run
    when the response starts."""
    app = Flask(__name__)
    app.config["CACHEKIT_CACHE_ALL"] = True
    FlaskCache(app, cache=cache)
    produced: list[int] = []

    @app.get("/s")
    def s() -> Response:
        def chunks() -> Iterator[bytes]:
            for i in range(3):
                produced.append(i)
                yield b"c"

        return Response(chunks())

    environ = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": "/s",
        "QUERY_STRING": "",
        "SERVER_NAME": "localhost",
        "SERVER_PORT": "80",
        "wsgi.url_scheme": "http",
        "wsgi.input": None,
        "wsgi.errors": None,
    }
    started: list[str] = []
    body = app.wsgi_app(environ, lambda status, headers, exc=None: started.append(status))
    assert started == ["200 OK"] and produced == []
    assert b"".join(body) == b"ccc" and produced == [0, 1, 2]


def test_app_error_is_not_cached(setup: tuple[Any, FlaskCache, Flask], counter: Counter) -> None:
    client, _, app = setup
    app.testing = False  # a 500 response, not a raised exception
    assert client.get("/boom").status_code == 500
    assert client.get("/boom").status_code == 500
    assert counter["boom"] == 2


def test_concurrent_cold_requests_run_the_view_once(
    cache: Cache, mode: str, counter: Counter
) -> None:
    app, fcache = make_app(cache, mode, counter)
    http = fcache.http_cache(app)

    @app.get("/slow")
    @(fcache.cached() if mode == "view" else (lambda f: f))
    def slow() -> str:
        counter.hit("slow")
        deadline = time.monotonic() + 5  # hold on until the 15 others wait for this one
        while http.followers() < 15 and time.monotonic() < deadline:
            time.sleep(0.001)
        return "slow"

    results: list[Any] = []
    barrier = threading.Barrier(16)

    def fetch() -> None:
        client = app.test_client()
        barrier.wait()
        results.append(client.get("/slow"))

    threads = [threading.Thread(target=fetch) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    assert counter["slow"] == 1
    assert [r.data for r in results] == [b"slow"] * 16
    assert sum(status(r).endswith("stored") for r in results) == 1


def wsgi_environ(path: str, method: str = "GET", **headers: str) -> dict[str, Any]:
    """A WSGI environ for ``path`` as a server would pass it (no test client)."""
    builder = EnvironBuilder(path=path, method=method, headers=headers)
    try:
        return builder.get_environ()
    finally:
        builder.close()


def call_wsgi(app: Flask, environ: dict[str, Any]) -> tuple[str, dict[str, str], bytes]:
    """Status, headers and body of one call of ``app`` (its full WSGI stack)."""
    started: list[Any] = []
    body = app(environ, lambda status, headers, exc=None: started.extend([status, headers]))
    try:
        data = b"".join(body)
    finally:
        close = getattr(body, "close", None)
        if close is not None:
            close()
    return started[0], dict(started[1]), data


def test_cold_reads_that_missed_before_the_leader_stored_do_not_run_the_view_again(
    cache: Cache, mode: str, counter: Counter, monkeypatch: pytest.MonkeyPatch
) -> None:
    """16 simultaneous cold requests against the WSGI app: the first to read the cache
    leads; the 15 others miss too, but reach the single-flight only after the leader
    has stored its response and left (what a slow thread on a busy server does). They
    must be answered from the cache, not run the view again."""
    app, fcache = make_app(cache, mode, counter)
    http = fcache.http_cache(app)
    n = 16
    lock = threading.Lock()
    reads: list[threading.Thread] = []  # threads whose first read is done, leader first
    all_read, leader_done = threading.Event(), threading.Event()
    real_get = http._get

    def get(key: str) -> bytes | None:
        value = real_get(key)
        me = threading.current_thread()
        with lock:
            first_read = me not in reads
            if first_read:
                reads.append(me)
                if len(reads) == n:
                    all_read.set()
            leading = reads[0] is me
        if first_read and not leading:
            assert value is None  # a cold miss, like the leader's
            assert leader_done.wait(10)  # held back until the leader has come and gone
        return value

    monkeypatch.setattr(http, "_get", get)

    @app.get("/race")
    @(fcache.cached() if mode == "view" else (lambda f: f))
    def race() -> str:
        assert all_read.wait(10)  # every request has read (and missed) by now
        return f"race {counter.hit('race')}"

    results: list[tuple[str, dict[str, str], bytes]] = []
    barrier = threading.Barrier(n)

    def fetch() -> None:
        environ = wsgi_environ("/race")
        barrier.wait()
        result = call_wsgi(app, environ)
        with lock:
            results.append(result)
            if reads and reads[0] is threading.current_thread():
                leader_done.set()

    threads = [threading.Thread(target=fetch) for _ in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    assert counter["race"] == 1
    assert [body for _, _, body in results] == [b"race 1"] * n
    cache_status = [headers["Cache-Status"] for _, headers, _ in results]
    assert cache_status.count("cachekit; fwd=uri-miss; stored") == 1
    assert sum(value.startswith("cachekit; hit") for value in cache_status) == n - 1


def test_one_read_per_hit_and_per_uncontended_miss(
    cache: Cache, counter: Counter, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cached view's hit is one backend read, and so is a miss (the view front hands
    its read to the view; with a remote lock, one more after taking it)."""
    app, fcache = make_app(cache, "view", counter)
    http = fcache.http_cache(app)
    keys: list[str] = []
    real_get = http._get

    def get(key: str) -> bytes | None:
        keys.append(key)
        return real_get(key)

    monkeypatch.setattr(http, "_get", get)
    miss = call_wsgi(app, wsgi_environ("/one?a=1"))
    assert miss[1]["Cache-Status"] == "cachekit; fwd=uri-miss; stored"
    assert len(keys) == (2 if http.use_lock else 1) and len(set(keys)) == 1
    del keys[:]
    for _ in range(3):
        status_line, headers, body = call_wsgi(app, wsgi_environ("/one?a=1"))
        assert status_line == "200 OK" and body == miss[2]
        assert headers["Cache-Status"].startswith("cachekit; hit")
        assert headers["Content-Length"] == str(len(body))
    assert len(keys) == 3
    status_line, headers, body = call_wsgi(app, wsgi_environ("/one?a=1", method="HEAD"))
    assert body == b"" and headers["Content-Length"] == str(len(miss[2]))
    assert counter["page"] == 1


def test_hits_still_run_hooks_and_outer_decorators(cache: Cache) -> None:
    """A hit skips Flask only where nothing else would have run: an outer decorator
    (an auth check), before/after_request hooks and session cookies all see hits."""
    app = Flask(__name__)
    app.secret_key = "test"
    # the session cookie tells no users apart by itself: the extension watches the session
    app.config["CACHEKIT_IGNORE_COOKIES"] = ["session"]
    fcache = FlaskCache(app, cache=cache)
    seen: list[str] = []

    def require_token(view: Any) -> Any:
        @functools.wraps(view)
        def checked(*args: Any, **kwargs: Any) -> Any:
            if request.headers.get("X-Token") != "ok":
                return "denied", 403
            return view(*args, **kwargs)

        return checked

    @app.get("/guarded")
    @require_token
    @fcache.cached(ttl=30)
    def guarded() -> str:
        seen.append("guarded")
        return "secret"

    @app.get("/open")
    @fcache.cached(ttl=30)
    def open_page() -> str:
        seen.append("open")
        return "open"

    client = app.test_client()
    assert client.get("/guarded", headers={"X-Token": "ok"}).data == b"secret"
    assert "hit" in status(client.get("/guarded", headers={"X-Token": "ok"}))
    assert client.get("/guarded").status_code == 403  # cached, but the check still runs
    assert client.get("/open").data == b"open"
    assert "hit" in status(client.get("/open"))

    def before() -> None:
        seen.append("before")

    def after(response: Response) -> Response:
        response.headers["X-After"] = "yes"
        return response

    # what @app.before_request and @app.after_request do (too late for those now)
    app.before_request_funcs.setdefault(None, []).append(before)
    app.after_request_funcs.setdefault(None, []).append(after)
    hit = client.get("/open")
    assert "hit" in status(hit) and hit.headers["X-After"] == "yes"
    assert seen == ["guarded", "open", "before"]
    app.before_request_funcs.clear()
    app.after_request_funcs.clear()
    with client.session_transaction() as sess:  # a permanent session: Flask refreshes it
        sess.permanent = True
        sess["user"] = "ada"
    hit = client.get("/open")
    assert "hit" in status(hit) and "session=" in hit.headers.get("Set-Cookie", "")
    assert seen == ["guarded", "open", "before"]


@pytest.mark.parametrize("on_error", ["ignore", "raise"])
def test_backend_outage_returns_the_views_response(
    private_redis: RedisServer, mode: str, counter: Counter, on_error: str
) -> None:
    cache = Cache(private_redis.url, prefix=unique_prefix(), on_error=on_error)
    app, _ = make_app(cache, mode, counter)
    client = app.test_client()
    assert status(client.get("/o")).endswith("stored")
    assert "hit" in status(client.get("/o"))
    private_redis.kill()
    for _ in range(3):
        response = client.get("/o")
        assert response.status_code == 200 and response.data.startswith(b"page ")
    assert client.get("/o", query_string={"h-Cache-Tag": "t"}).status_code == 200
    assert counter["page"] == 5
    cache.close()


# ---------------------------------------------------------------- functions, init_app


def test_cached_caches_plain_functions_called_inside_a_request(cache: Cache) -> None:
    app = Flask(__name__)
    fcache = FlaskCache(app, cache=cache)
    calls: list[str] = []

    @fcache.cached(ttl=30)
    def price(region: str) -> dict[str, Any]:
        calls.append(region)
        return {"region": region, "price": 3}

    @fcache.memoize(ttl=30, key="stock:{item}")
    def stock(item: str) -> int:
        calls.append(f"stock {item}")
        return 7

    @app.get("/price/<region>")
    @fcache.cached(ttl=30)
    def view(region: str) -> dict[str, Any]:
        return {"p": price(region), "s": stock("x")}

    client = app.test_client()
    assert client.get("/price/eu").json == {"p": {"region": "eu", "price": 3}, "s": 7}
    assert client.get("/price/us").json == {"p": {"region": "us", "price": 3}, "s": 7}
    assert "hit" in status(client.get("/price/eu"))
    assert calls == ["eu", "stock x", "us"]
    with app.app_context():
        assert price("eu") == {"region": "eu", "price": 3}  # a function, outside a request
        assert cache.get("stock:x") == 7
        price.invalidate("eu")  # type: ignore[attr-defined]
        assert price("eu") == {"region": "eu", "price": 3}
    assert calls == ["eu", "stock x", "us", "eu"]


def test_init_app_config_and_several_apps(redis_server: RedisServer) -> None:
    fcache = FlaskCache(default_ttl=5)
    apps = []
    for prefix in (unique_prefix(), unique_prefix()):
        app = Flask(__name__)
        app.config.update(CACHEKIT_URL=redis_server.url, CACHEKIT_PREFIX=prefix)
        app.config["CACHEKIT_HTTP"] = {"cache_name": f"edge-{prefix}"}
        fcache.init_app(app)
        n = len(apps)

        @app.get("/")
        @fcache.cached_view()
        def index(n: int = n) -> str:
            return f"app {n}"

        apps.append(app)
    for n, app in enumerate(apps):
        assert "cachekit" in app.extensions
        client = app.test_client()
        client.get("/")
        hit = client.get("/")
        assert hit.data == f"app {n}".encode()
        assert hit.headers["Cache-Status"].startswith(f"edge-{app.config['CACHEKIT_PREFIX']}; hit")
        assert int(hit.headers["Cache-Status"].rsplit("=", 1)[1]) <= 5
        with app.app_context():
            assert fcache.cache.prefix == app.config["CACHEKIT_PREFIX"]
            assert fcache.cache.default_ttl == 5
            fcache.cache.clear()
            fcache.cache.close()


def test_using_an_app_without_init_app_is_an_error() -> None:
    fcache = FlaskCache()
    app = Flask(__name__)
    with app.app_context(), pytest.raises(RuntimeError, match="init_app"):
        _ = fcache.cache


def test_processes_coalesce_through_the_cache_lock(redis_server: RedisServer) -> None:
    """Two apps with their own Cache objects on one Redis stand in for two processes:
    the second waits on the lock the first holds, then serves what the first stored."""
    prefix = unique_prefix()
    counter = Counter()
    started, release, waiting = threading.Event(), threading.Event(), threading.Event()
    apps = []
    for _ in range(2):
        app = Flask(__name__)
        app.config.update(CACHEKIT_URL=redis_server.url, CACHEKIT_PREFIX=prefix, CACHEKIT_LOCK=True)
        fcache = FlaskCache(app)

        @app.get("/once")
        @fcache.cached_view(ttl=30)
        def once() -> str:
            counter.hit("once")
            started.set()
            assert release.wait(10)
            return "once"

        apps.append((app, fcache))
    bytes_cache = apps[1][1].http_cache(apps[1][0]).cache
    real_lock = bytes_cache.lock

    def spying_lock(*args: Any, **kwargs: Any) -> Any:
        lock = real_lock(*args, **kwargs)
        acquire = lock.acquire

        def spy(blocking: Any = None, **options: Any) -> bool:
            if blocking:
                waiting.set()
            return bool(acquire(blocking=blocking, **options))

        lock.acquire = spy
        return lock

    bytes_cache.lock = spying_lock  # type: ignore[method-assign]
    results: dict[int, Any] = {}

    def fetch(n: int) -> None:
        results[n] = apps[n][0].test_client().get("/once")

    first = threading.Thread(target=fetch, args=(0,))
    first.start()
    assert started.wait(10)
    second = threading.Thread(target=fetch, args=(1,))
    second.start()
    assert waiting.wait(10)
    release.set()
    first.join(10)
    second.join(10)
    assert counter["once"] == 1
    assert results[0].data == results[1].data == b"once"
    assert status(results[1]).startswith("cachekit; hit")
    for app, fcache in apps:
        with app.app_context():
            fcache.cache.clear()
            fcache.cache.close()


# ------------------------------------- the final response decides; hits pass every check


def test_after_request_hooks_decide_what_is_stored(cache: Cache) -> None:
    """A miss is stored only if the final response allows it: a hook that marks a
    logged-in user's page private, sets a cookie or adds a Vary is seen. Two users
    share the cache; neither ever gets the other's page."""
    app = Flask(__name__)
    fcache = FlaskCache(app, cache=cache)
    runs = Counter()

    @app.get("/dashboard")
    @fcache.cached(ttl=30)
    def dashboard() -> str:  # who is logged in comes from a cookie the view reads
        return f"dashboard of {request.cookies.get('auth', 'anonymous')} {runs.hit('d')}"

    @app.get("/greeting")
    @fcache.cached(ttl=30)
    def greeting() -> str:
        hello = "bonjour" if request.accept_languages.best == "fr" else "hello"
        return f"{hello} {runs.hit('g')}"

    @app.get("/tracked")
    @fcache.cached(ttl=30)
    def tracked() -> str:
        return f"tracked {runs.hit('t')}"

    @app.after_request
    def personal(response: Response) -> Response:
        if request.cookies.get("auth"):
            response.headers["Cache-Control"] = "private"
        if request.path == "/greeting":
            response.vary.add("Accept-Language")
        if request.path == "/tracked":
            response.set_cookie("visitor", "v1")
        response.headers.add("X-Frame-Options", "DENY")  # not idempotent: once per response
        return response

    alice, anonymous = app.test_client(), app.test_client()
    alice.set_cookie("auth", "alice")
    assert alice.get("/dashboard").data == b"dashboard of alice 1"
    page = anonymous.get("/dashboard")
    assert page.data == b"dashboard of anonymous 2"
    assert status(page) == "cachekit; fwd=uri-miss; stored"
    hit = anonymous.get("/dashboard")
    assert hit.data == page.data and "hit" in status(hit)
    assert hit.headers.getlist("X-Frame-Options") == ["DENY"]  # the hook ran once on it

    french = {"Accept-Language": "fr"}
    assert anonymous.get("/greeting", headers=french).data == b"bonjour 1"
    assert anonymous.get("/greeting").data == b"hello 2"  # the hook's Vary keys it
    assert anonymous.get("/greeting", headers=french).data == b"bonjour 1"
    assert "Accept-Language" in anonymous.get("/greeting").headers["Vary"]

    first = anonymous.get("/tracked")
    assert first.data == b"tracked 1" and status(first) == "cachekit; fwd=uri-miss"
    assert alice.get("/tracked").data == b"tracked 2"  # Set-Cookie: never stored


def test_a_failing_after_request_hook_stores_nothing_and_releases_waiters(cache: Cache) -> None:
    app = Flask(__name__)
    fcache = FlaskCache(app, cache=cache)
    runs = Counter()
    failing = [True]  # the first request's hook raises

    @app.get("/r")
    @fcache.cached(ttl=30)
    def r() -> str:
        return f"r {runs.hit('r')}"

    @app.after_request
    def hook(response: Response) -> Response:
        if failing[0]:
            raise RuntimeError("hook failed")
        return response

    client = app.test_client()
    assert client.get("/r").status_code == 500  # the 500 error page replaced the view's
    assert fcache.http_cache(app)._all_flights() == []  # settled at teardown
    failing[0] = False
    assert client.get("/r").data == b"r 2"
    assert "hit" in status(client.get("/r"))


class AllowList:
    """WSGI middleware: 403 for blocked client addresses."""

    def __init__(self, app: Any, blocked: set[str]) -> None:
        self.app, self.blocked = app, blocked

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        if environ.get("REMOTE_ADDR") in self.blocked:
            start_response("403 Forbidden", [("Content-Type", "text/plain")])
            return [b"blocked"]
        return self.app(environ, start_response)


@pytest.mark.parametrize("installed", ["before init_app", "after init_app"])
def test_wsgi_middleware_refuses_hits_too(cache: Cache, installed: str) -> None:
    """An IP allow-list installed before or after init_app refuses a cached URL's hit
    from a blocked client, as it refuses its miss."""
    app = Flask(__name__)
    if installed == "before init_app":
        app.wsgi_app = AllowList(app.wsgi_app, {"10.0.0.9"})  # type: ignore[method-assign]
    fcache = FlaskCache(app, cache=cache)
    if installed == "after init_app":
        app.wsgi_app = AllowList(app.wsgi_app, {"10.0.0.9"})  # type: ignore[method-assign]
    runs = Counter()

    @app.get("/report")
    @fcache.cached(ttl=30)
    def report() -> str:
        return f"report {runs.hit('report')}"

    client = app.test_client()
    allowed, blocked = {"REMOTE_ADDR": "10.0.0.1"}, {"REMOTE_ADDR": "10.0.0.9"}
    assert status(client.get("/report", environ_base=allowed)).endswith("stored")
    assert "hit" in status(client.get("/report", environ_base=allowed))
    refused = client.get("/report", environ_base=blocked)
    assert refused.status_code == 403 and refused.data == b"blocked"
    assert runs["report"] == 1


def test_keys_are_made_from_the_request_flask_sees(cache: Cache) -> None:
    """ProxyFix installed before init_app sets the host from X-Forwarded-Host: two
    tenants behind one proxy (one upstream Host) keep their own pages."""
    app = Flask(__name__)
    app.wsgi_app = ProxyFix(app.wsgi_app, x_host=1)  # type: ignore[method-assign]
    fcache = FlaskCache(app, cache=cache)

    @app.get("/home")
    @fcache.cached(ttl=30)
    def home() -> str:
        return f"home of {request.host}"

    client = app.test_client()
    for _ in range(2):
        for tenant in ("a.example", "b.example"):
            page = client.get("/home", headers={"Host": "upstream", "X-Forwarded-Host": tenant})
            assert page.data == f"home of {tenant}".encode()
    assert "hit" in status(page)


def test_the_app_wide_cache_must_be_the_innermost_wsgi_layer(cache: Cache) -> None:
    app = Flask(__name__)
    app.config["CACHEKIT_CACHE_ALL"] = True
    app.wsgi_app = ProxyFix(app.wsgi_app, x_host=1)  # type: ignore[method-assign]
    with pytest.raises(ConfigurationError, match="init_app before installing middleware"):
        FlaskCache(app, cache=cache)


def test_cached_functions_work_outside_an_app_context(cache: Cache) -> None:
    """FlaskCache(app) remembers its app for calls made outside any app context (a
    script, a worker); FlaskCache() + init_app has no app to fall back on."""
    app = Flask(__name__)
    fcache = FlaskCache(app, cache=cache)
    calls: list[str] = []

    @fcache.cached(ttl=30)
    def price(region: str) -> int:
        calls.append(region)
        return 3

    assert price("eu") == price("eu") == 3
    assert calls == ["eu"]
    assert fcache.cache is cache
    with app.app_context():
        assert price("eu") == 3 and calls == ["eu"]  # the same entry
    price.invalidate("eu")  # type: ignore[attr-defined]
    assert price("eu") == 3 and calls == ["eu", "eu"]

    factory_made = FlaskCache()
    factory_made.init_app(Flask(__name__))

    @factory_made.cached(ttl=30)
    def stock(item: str) -> int:
        return 7

    with pytest.raises(RuntimeError, match="app context"):
        stock("x")


@pytest.mark.parametrize(
    ("adapter", "framework"), [("flask", "flask"), ("django", "django"), ("starlette", "starlette")]
)
def test_an_adapter_without_its_framework_names_the_extra(adapter: str, framework: str) -> None:
    """Imported where the framework is not installed (blocked in a fresh interpreter),
    an adapter says which extra to install instead of a bare ModuleNotFoundError."""
    script = f"""
import sys
sys.modules[{framework!r}] = None  # as if it were not installed
import cachekit
try:
    import cachekit.integrations.{adapter}
except ImportError as exc:
    print(type(exc).__name__, exc.name, exc)
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == (
        f"ImportError {framework} cachekit.integrations.{adapter} needs {framework}, "
        f"which is not installed: pip install 'cachekit[{adapter}]'"
    )


def test_a_request_waiting_on_a_page_a_hook_made_private_gets_its_own(cache: Cache) -> None:
    """Concurrent cold requests wait for the leader's decision, which is taken on the
    final response: alice's page, made private by a hook, is not handed to the
    anonymous request that waited for it."""
    app = Flask(__name__)
    fcache = FlaskCache(app, cache=cache)
    http = fcache.http_cache(app)

    @app.get("/home")
    @fcache.cached(ttl=30)
    def home() -> str:
        user = request.cookies.get("auth", "anonymous")
        if user == "alice":  # the leader: hold on until the other request waits for it
            deadline = time.monotonic() + 5
            while http.followers() < 1 and time.monotonic() < deadline:
                time.sleep(0.001)
        return f"home of {user}"

    @app.after_request
    def private_when_logged_in(response: Response) -> Response:
        if request.cookies.get("auth"):
            response.headers["Cache-Control"] = "private"
        return response

    alice, anonymous = app.test_client(), app.test_client()
    alice.set_cookie("auth", "alice")
    results: dict[str, bytes] = {}
    leader = threading.Thread(target=lambda: results.update(alice=alice.get("/home").data))
    leader.start()
    deadline = time.monotonic() + 5
    while not http._all_flights() and time.monotonic() < deadline:
        time.sleep(0.001)
    results["anonymous"] = anonymous.get("/home").data
    leader.join(10)
    assert results == {"alice": b"home of alice", "anonymous": b"home of anonymous"}
