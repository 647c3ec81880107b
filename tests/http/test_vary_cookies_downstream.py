"""Pages stored per ``vary_cookies`` value are sent with ``Vary: Cookie``: a cache in
front of cachekit (a CDN, a proxy, the browser) does not know the option, and without the
header it would hand the variant it saw first (``lang=fr``) to everyone. The miss that is
stored, every hit and every 304 carry it; a page whose policy has no ``vary_cookies`` is
sent as before. Through the Starlette, Flask and Django test clients, on memory and on a
real redis-server."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from typing import Any

import pytest

pytest.importorskip("django")

from django_settings import configure

configure(__name__)

from cachekit.integrations.django import cache_page, close_shared_caches  # noqa: E402
from cachekit.integrations.flask import FlaskCache  # noqa: E402
from cachekit.integrations.starlette import CacheMiddleware  # noqa: E402
from django.core.cache import caches  # noqa: E402
from django.http import HttpRequest, HttpResponse  # noqa: E402
from django.test import Client, override_settings  # noqa: E402
from django.urls import path  # noqa: E402
from flask import Flask  # noqa: E402
from flask import Response as FlaskResponse  # noqa: E402
from flask import request as flask_request  # noqa: E402
from starlette.applications import Starlette  # noqa: E402
from starlette.requests import Request  # noqa: E402
from starlette.responses import PlainTextResponse, Response  # noqa: E402
from starlette.routing import Route  # noqa: E402

from cachekit import Cache  # noqa: E402
from cachekit.http import Forward, HttpCachePolicy  # noqa: E402
from cachekit.http import Request as HttpRequestValue  # noqa: E402
from cachekit.http import Response as HttpResponseValue  # noqa: E402
from tests.conftest import unique_prefix  # noqa: E402

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

VARY: dict[str, Any] = {"vary_cookies": ["lang"], "ignore_cookies": ["_ga"]}
Sent = tuple[int, list[str], str]  # status, the Vary items (lower case, in order), body
Get = Callable[[str, str, dict[str, str]], Sent]  # (path, Cookie header, headers)
runs: list[str] = []


def _page(path: str, lang: str) -> tuple[str, dict[str, str]]:
    """What every framework's view answers: the body depends on the lang cookie."""
    path = path.rstrip("/")  # Django's URLs end in "/"
    runs.append(f"{path} {lang}")
    headers = {"ETag": f'"{path.strip("/")}-{lang}"'}
    if path.startswith("/ae"):
        headers["Vary"] = "Accept-Encoding"
    if path.startswith("/star"):
        headers["Vary"] = "*"
    return f"{path} in {lang}", headers


def _vary(values: list[str]) -> list[str]:
    return [item.strip().lower() for value in values for item in value.split(",") if item.strip()]


# -- the three frameworks --------------------------------------------------------------------
def _starlette(cache: Cache) -> Get:
    async def endpoint(request: Request) -> Response:
        body, headers = _page(request.url.path, request.cookies.get("lang", "en"))
        return PlainTextResponse(body, headers=headers)

    def app(**options: Any) -> TestClient:
        made = Starlette(routes=[Route("/{name}", endpoint)])
        made.add_middleware(CacheMiddleware, cache=cache, ttl=60, **options)
        return TestClient(made)

    varying, plain = app(**VARY), app()

    def get(path: str, cookie: str, headers: dict[str, str]) -> Sent:
        client = plain if path.startswith("/plain") else varying
        sent = {"Cookie": cookie, **headers} if cookie else headers
        r = client.get(path, headers=sent)
        return r.status_code, _vary(r.headers.get_list("vary")), r.text

    return get


def _flask(cache: Cache) -> Get:
    app = Flask(__name__)
    fcache = FlaskCache(app, cache=cache)

    def view() -> FlaskResponse:
        body, headers = _page(flask_request.path, flask_request.cookies.get("lang", "en"))
        return FlaskResponse(body, headers=headers)

    for rule in ("/p", "/ae", "/star"):
        app.add_url_rule(rule, rule, fcache.cached(60, **VARY)(view))
    app.add_url_rule("/plain", "/plain", fcache.cached(60)(view))
    client = app.test_client(use_cookies=False)  # the Cookie header as given

    def get(path: str, cookie: str, headers: dict[str, str]) -> Sent:
        sent = {"Cookie": cookie, **headers} if cookie else headers
        r = client.get(path, headers=sent)
        return r.status_code, _vary(r.headers.getlist("Vary")), r.get_data(as_text=True)

    return get


def _django_view(request: HttpRequest) -> HttpResponse:
    body, headers = _page(request.path, request.COOKIES.get("lang", "en"))
    return HttpResponse(body, headers=headers)


urlpatterns = [
    *(path(f"{name}/", cache_page(60, **VARY)(_django_view)) for name in ("p", "ae", "star")),
    path("plain/", cache_page(60)(_django_view)),
]


def _django(location: str) -> Iterator[Get]:
    setting = {"BACKEND": "cachekit.integrations.django.CachekitCache", "LOCATION": location}
    setting["KEY_PREFIX"] = unique_prefix()
    with override_settings(ROOT_URLCONF=__name__, CACHES={"default": setting}):
        client = Client()

        def get(path: str, cookie: str, headers: dict[str, str]) -> Sent:
            client.cookies.clear()
            extra = {"HTTP_" + k.upper().replace("-", "_"): v for k, v in headers.items()}
            if cookie:
                extra["HTTP_COOKIE"] = cookie
            r = client.get(path.rstrip("/") + "/", **extra)
            vary = [r.headers["Vary"]] if r.has_header("Vary") else []
            return r.status_code, _vary(vary), r.content.decode()

        yield get
        caches["default"].clear()
    close_shared_caches()


@pytest.fixture(params=["memory", "redis"])
def backend(request: pytest.FixtureRequest) -> str:
    if request.param == "memory":
        return "memory://"
    return str(request.getfixturevalue("redis_server").url)


@pytest.fixture(params=["starlette", "flask", "django"])
def get(request: pytest.FixtureRequest, backend: str) -> Iterator[Get]:
    runs.clear()
    if request.param == "django":
        yield from _django(backend)
        return
    cache = Cache(backend, prefix=unique_prefix())
    yield (_starlette if request.param == "starlette" else _flask)(cache)
    cache.clear()
    cache.close()


# -- the tests -------------------------------------------------------------------------------
def test_the_stored_miss_every_hit_and_a_304_carry_vary_cookie(get: Get) -> None:
    status, vary, body = get("/p", "lang=fr", {})
    assert (status, vary, body) == (200, ["cookie"], "/p in fr")  # the miss that is stored
    for _ in range(2):
        assert get("/p", "lang=fr", {}) == (200, ["cookie"], "/p in fr")  # hits
    assert get("/p", "lang=fr; _ga=GA1.2", {}) == (200, ["cookie"], "/p in fr")  # still a hit
    assert get("/p", "lang=de", {}) == (200, ["cookie"], "/p in de")
    assert get("/p", "", {}) == (200, ["cookie"], "/p in en")  # no cookie: a variant too
    assert get("/p", "", {}) == (200, ["cookie"], "/p in en")
    not_modified = get("/p", "lang=fr", {"If-None-Match": '"p-fr"'})
    assert not_modified[:2] == (304, ["cookie"])
    assert runs == ["/p fr", "/p de", "/p en"]  # the rest were the cache's answers


def test_an_existing_vary_is_merged_once(get: Get) -> None:
    for _ in range(2):
        assert get("/ae", "lang=fr", {}) == (200, ["accept-encoding", "cookie"], "/ae in fr")
        assert get("/ae", "lang=fr", {"Accept-Encoding": "br"})[1] == ["accept-encoding", "cookie"]
    assert runs == ["/ae fr", "/ae fr"]  # the second: its own Accept-Encoding variant
    assert get("/star", "lang=fr", {})[1] == ["*"]  # Vary: * is left as it is


def test_pages_without_vary_cookies_get_no_vary(get: Get) -> None:
    assert get("/plain", "", {}) == (200, [], "/plain in en")
    assert get("/plain", "", {}) == (200, [], "/plain in en")  # a hit
    assert get("/plain", "", {"If-None-Match": '"plain-en"'})[:2] == (304, [])
    assert runs == ["/plain en"]


def test_the_rules_add_it_to_a_miss_not_stored_and_keep_one_cookie() -> None:
    policy = HttpCachePolicy(vary_cookies=("lang",))
    req = HttpRequestValue("GET", "http", "h", "/x", headers={"Cookie": "lang=fr"})
    not_stored = HttpResponseValue(200, (("Cache-Control", "no-store"),))
    sent, store = Forward(req, policy, "miss", True).finish(not_stored, 0.0)
    assert store is None and ("Vary", "Cookie") in sent.headers
    said = HttpResponseValue(200, (("vary", "COOKIE"),))
    sent, _ = Forward(req, policy, "miss", True).finish(said, 0.0)
    assert [(k, v) for k, v in sent.headers if k.lower() == "vary"] == [("vary", "COOKIE")]
    plain, _ = Forward(req, HttpCachePolicy(), "miss", True).finish(HttpResponseValue(200), 0.0)
    assert not any(k.lower() == "vary" for k, _ in plain.headers)
