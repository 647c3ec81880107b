"""Hostile tests: two requesters sharing one cache through the HTTP adapters must never
see each other's page (DESIGN.md "HTTP caching"). Memory and a real redis-server."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from typing import Any

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


def _visits(page: Any, alice: Any, guest: Any, who: str = "alice") -> None:
    """Guest first (stored), then the cookie's owner, then both again: each sees only
    their own page, whichever of them came first. `page(client)` returns the text."""
    for _ in range(2):
        assert who not in page(guest)
        assert who in page(alice)
    assert who in page(alice)


def _client(app: Any, **cookies: str) -> TestClient:
    client = TestClient(app)
    for name, value in cookies.items():
        client.cookies.set(name, value)
    return client


def _cookie_app(cache: Cache, endpoint: object, **options: Any) -> Starlette:
    app = Starlette(routes=[Route("/p", endpoint)])  # type: ignore[arg-type]
    app.add_middleware(CacheMiddleware, cache=cache, ttl=60, **options)
    return app


async def _reads_cookie(request: Request) -> Response:
    return PlainTextResponse(f"hello {request.cookies.get('user', 'guest')}")


async def _reads_raw_header(request: Request) -> Response:
    # no cookie parsing at all: the raw field, as a hand-written auth check would
    raw = request.headers.get("cookie", "")
    return PlainTextResponse(f"hello {raw.partition('user=')[2] or 'guest'}")


@pytest.mark.parametrize("endpoint", [_reads_cookie, _reads_raw_header], ids=["cookies", "raw"])
def test_starlette_handler_reading_a_cookie_directly(cache: Cache, endpoint: object) -> None:
    """A request carrying a cookie is neither served nor stored a shared page: whatever
    the handler read (request.cookies or the raw header), nobody else gets its page."""
    app = _cookie_app(cache, endpoint)
    alice, guest = _client(app, user="alice"), _client(app)
    _visits(lambda c: c.get("/p").text, alice, guest)
    # the guest's page is stored; alice's requests go to the app and are reported so
    assert "hit" in guest.get("/p").headers["cache-status"]
    assert alice.get("/p").headers["cache-status"] == "cachekit; fwd=bypass"


@pytest.mark.parametrize("order", ["owner-first", "guest-first"])
def test_fastapi_cookie_dependency(cache: Cache, order: str) -> None:
    app = FastAPI()

    @app.get("/p")
    async def page(user: str | None = Cookie(default=None)) -> dict[str, str | None]:
        return {"user": user}

    app.add_middleware(CacheMiddleware, cache=cache, ttl=60)
    alice, guest = _client(app, user="alice"), _client(app)
    if order == "owner-first":
        assert alice.get("/p").json() == {"user": "alice"}
    _visits(lambda c: str(c.get("/p").json()), alice, guest)


def test_fastapi_cookie_dependency_under_cache_response(cache: Cache) -> None:
    from cachekit.integrations.starlette import cache_response

    app = FastAPI()

    @app.get("/p")
    @cache_response(cache, ttl=60)
    async def page(user: str | None = Cookie(default=None)) -> dict[str, str | None]:
        return {"user": user}

    alice, guest = _client(app, user="alice"), _client(app)
    assert alice.get("/p").json() == {"user": "alice"}
    _visits(lambda c: str(c.get("/p").json()), alice, guest)


def test_a_public_page_is_served_to_a_request_with_cookies(cache: Cache) -> None:
    calls: list[str] = []

    async def page(request: Request) -> Response:
        calls.append(request.cookies.get("user", "guest"))
        return PlainTextResponse("for everyone", headers={"Cache-Control": "public"})

    app = _cookie_app(cache, page)
    alice, guest = _client(app, user="alice"), _client(app)
    assert alice.get("/p").text == "for everyone"  # stored from alice's request: public
    assert guest.get("/p").text == alice.get("/p").text == "for everyone"
    assert calls == ["alice"]


def test_ignored_cookies_tell_nobody_apart_but_other_cookies_still_do(cache: Cache) -> None:
    app = _cookie_app(cache, _reads_cookie, ignore_cookies=["_ga*", "consent"])
    tracked = _client(app, _ga="GA1.2.3", _ga_XY="x", consent="yes")
    guest = _client(app)
    assert guest.get("/p").text == "hello guest"
    hit = tracked.get("/p")  # analytics cookies only: the shared page
    assert hit.text == "hello guest" and "hit" in hit.headers["cache-status"]
    alice = _client(app, _ga="GA1.2.3", user="alice")  # and one that is not ignored
    _visits(lambda c: c.get("/p").text, alice, guest)
    # a cookie hidden after a comma (HTTP/2 Cookie fields joined) still counts
    r = guest.get("/p", headers={"Cookie": "_ga=1, user=alice"})
    assert "hit" not in r.headers["cache-status"]


def test_vary_cookies_key_pages_by_those_values_only(cache: Cache) -> None:
    calls: list[str] = []

    async def page(request: Request) -> Response:
        lang = request.cookies.get("lang", "en")
        calls.append(lang)
        return PlainTextResponse(f"lang {lang} user {request.cookies.get('user', '-')}")

    app = _cookie_app(cache, page, vary_cookies=["lang"], ignore_cookies=["_ga"])
    fr, fr2, de = _client(app, lang="fr"), _client(app, lang="fr", _ga="1"), _client(app, lang="de")
    guest = _client(app)
    for _ in range(2):
        assert fr.get("/p").text == fr2.get("/p").text == "lang fr user -"
        assert de.get("/p").text == "lang de user -"
        assert guest.get("/p").text == "lang en user -"
    assert sorted(calls) == ["de", "en", "fr"]
    alice = _client(app, lang="fr", user="alice")  # lang varies, user is identifying
    _visits(lambda c: c.get("/p").text, alice, fr)
    assert fr.get("/p").headers["cache-status"].startswith("cachekit; hit")
    assert sorted(calls) == ["de", "en", "fr", "fr", "fr", "fr"]  # alice's 3 never stored


def test_cookie_options_come_from_the_cache_and_are_checked(cache: Cache) -> None:
    from cachekit import ConfigurationError

    derived = cache.with_options(ignore_cookies=["_ga*"])
    app = _cookie_app(derived, _reads_cookie)
    assert _client(app).get("/p").text == "hello guest"
    assert "hit" in _client(app, _ga="1").get("/p").headers["cache-status"]
    assert "hit" not in _client(app, sid="1").get("/p").headers["cache-status"]
    with pytest.raises(ConfigurationError, match="list of globs"):
        Cache("memory://", ignore_cookies="_ga")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="cookie name glob"):
        CacheMiddleware(_reads_cookie, cache=cache, vary_cookies=["a;b"])
    assert Cache("memory://?vary_cookies=lang,theme").options["vary_cookies"] == (
        "lang",
        "theme",
    )


# --- Flask -------------------------------------------------------------------------------


def _flask(cache: Cache, mode: str) -> tuple[Any, Any]:
    from cachekit.integrations.flask import FlaskCache
    from flask import Flask

    app = Flask(__name__)
    app.secret_key = "attack"
    app.config["CACHEKIT_CACHE_ALL"] = mode == "all"
    app.config["CACHEKIT_DEFAULT_TTL"] = 30
    fcache = FlaskCache(app, cache=cache)

    def view(func: Any) -> Any:
        return fcache.cached()(func) if mode == "view" else func

    return app, view


@pytest.mark.parametrize("mode", ["view", "all"])
def test_flask_session_user_is_not_shared(cache: Cache, mode: str) -> None:
    from flask import session

    app, view = _flask(cache, mode)

    @app.get("/login/<name>")
    def login(name: str) -> str:
        session["user"] = name
        session.permanent = True
        return "ok"

    @app.get("/p")
    @view
    def page() -> str:
        return f"hello {session.get('user', 'guest')}"

    alice, guest = app.test_client(), app.test_client()
    alice.get("/login/alice")
    assert alice.get("/p").text == "hello alice"
    assert guest.get("/p").text == "hello guest"
    assert alice.get("/p").text == "hello alice"


@pytest.mark.parametrize("mode", ["view", "all"])
def test_flask_make_response_with_a_cookie_and_a_tuple_with_headers(
    cache: Cache, mode: str
) -> None:
    from flask import make_response, request

    app, view = _flask(cache, mode)

    @app.get("/c")
    @view
    def with_cookie() -> Any:
        response = make_response(f"for {request.args.get('u')}")
        response.set_cookie("token", request.args.get("u", ""))
        return response

    @app.get("/t")
    @view
    def as_tuple() -> Any:
        who = request.headers.get("X-User", "")
        return f"for {who}", 200, {"Cache-Control": "Private, max-age=60"}

    client = app.test_client()
    assert client.get("/c?u=a").headers.get("Set-Cookie", "").startswith("token=a")
    assert client.get("/c?u=a").headers.get("Set-Cookie", "").startswith("token=a")
    assert client.get("/t", headers={"X-User": "alice"}).text == "for alice"
    assert client.get("/t", headers={"X-User": "bob"}).text == "for bob"


@pytest.mark.parametrize("mode", ["view", "all"])
@pytest.mark.parametrize("read", ["cookies", "raw"])
def test_flask_g_user_from_a_cookie_in_before_request(cache: Cache, mode: str, read: str) -> None:
    from flask import g, request

    app, view = _flask(cache, mode)

    @app.before_request
    def load_user() -> None:
        if read == "cookies":
            g.user = request.cookies.get("uid", "guest")
        else:
            g.user = request.headers.get("Cookie", "").partition("uid=")[2] or "guest"

    @app.get("/p")
    @view
    def page() -> str:
        return f"hello {g.user}"

    alice, guest = app.test_client(), app.test_client()
    alice.set_cookie("uid", "alice")
    assert alice.get("/p").text == "hello alice"
    _visits(lambda c: c.get("/p").text, alice, guest)


@pytest.mark.parametrize("mode", ["view", "all"])
def test_flask_ignore_cookies_from_app_config(cache: Cache, mode: str) -> None:
    from cachekit.integrations.flask import FlaskCache
    from flask import Flask, request

    app = Flask(__name__)
    app.config["CACHEKIT_CACHE_ALL"] = mode == "all"
    app.config["CACHEKIT_IGNORE_COOKIES"] = "_ga*, consent"  # text, as from the environment
    fcache = FlaskCache(app, cache=cache)
    calls: list[str] = []

    @app.get("/p")
    def page() -> str:
        calls.append(request.cookies.get("uid", "guest"))
        return f"hello {calls[-1]}"

    if mode == "view":
        app.view_functions["page"] = fcache.cached(ttl=30)(page)
    tracked, alice = app.test_client(), app.test_client()
    tracked.set_cookie("_ga", "1")
    alice.set_cookie("uid", "alice")
    assert tracked.get("/p").text == tracked.get("/p").text == "hello guest"
    assert alice.get("/p").text == "hello alice"
    assert calls == ["guest", "alice"]


def test_flask_authorization_header_is_not_shared(cache: Cache) -> None:
    from flask import request

    app, _ = _flask(cache, "all")

    @app.get("/p")
    def page() -> str:
        return f"hello {request.headers.get('Authorization', 'guest')}"

    client = app.test_client()
    assert client.get("/p", headers={"Authorization": "Bearer a"}).text == "hello Bearer a"
    assert client.get("/p").text == "hello guest"


# --- Django ------------------------------------------------------------------------------
# Django's settings are configured once per process (tests/django_settings.py); each test
# routes to this module's urlpatterns with override_settings.

try:
    import django_settings

    django_settings.configure("test_django")
    from cachekit.integrations.django import cache_page, close_shared_caches
    from django.http import HttpRequest, HttpResponse
    from django.middleware.csrf import get_token
    from django.test import Client, override_settings
    from django.urls import path
    from django.utils.translation import get_language

    @cache_page(60)
    def dj_cookie_view(request: HttpRequest) -> HttpResponse:
        return HttpResponse(f"hello {request.COOKIES.get('uid', 'guest')}")

    @cache_page(60)
    def dj_raw_cookie_view(request: HttpRequest) -> HttpResponse:
        raw = request.META.get("HTTP_COOKIE", "")
        return HttpResponse(f"hello {raw.partition('uid=')[2] or 'guest'}")

    @cache_page(60)
    def dj_csrf_view(request: HttpRequest) -> HttpResponse:
        return HttpResponse(f"<input name=csrfmiddlewaretoken value={get_token(request)}>")

    @cache_page(60)
    def dj_locale_view(request: HttpRequest) -> HttpResponse:
        return HttpResponse(f"lang {get_language()}")

    @cache_page(60)
    def dj_session_view(request: HttpRequest) -> HttpResponse:
        return HttpResponse(f"hello {request.session.get('user', 'guest')}")

    def dj_login(request: HttpRequest, name: str) -> HttpResponse:
        request.session["user"] = name
        return HttpResponse("ok")

    @cache_page(60)
    def dj_auth_view(request: HttpRequest) -> HttpResponse:
        return HttpResponse(f"hello {request.headers.get('Authorization', 'guest')}")

    urlpatterns = [
        path("cookie/", dj_cookie_view),
        path("raw-cookie/", dj_raw_cookie_view),
        path("csrf/", dj_csrf_view),
        path("locale/", dj_locale_view),
        path("session/", dj_session_view),
        path("login/<str:name>/", dj_login),
        path("auth/", dj_auth_view),
    ]
    HAVE_DJANGO = True
except ModuleNotFoundError:  # pragma: no cover
    HAVE_DJANGO = False

needs_django = pytest.mark.skipif(not HAVE_DJANGO, reason="django not installed")


@pytest.fixture(params=["memory", "redis"])
def dj(request: pytest.FixtureRequest) -> Iterator[None]:
    location = "memory://" if request.param == "memory" else request.getfixturevalue("redis_url")
    caches = {
        "default": {
            "BACKEND": "cachekit.integrations.django.CachekitCache",
            "LOCATION": location,
            "KEY_PREFIX": unique_prefix(),
        }
    }
    with override_settings(ROOT_URLCONF=__name__, CACHES=caches):
        yield
    close_shared_caches()


@needs_django
@pytest.mark.usefixtures("dj")
def test_django_csrf_token_page_is_not_shared() -> None:
    middleware = ["django.middleware.csrf.CsrfViewMiddleware"]
    with override_settings(MIDDLEWARE=middleware):
        first, second = Client().get("/csrf/"), Client().get("/csrf/")
        assert first.content != second.content  # each a token of its own
        assert first.cookies["csrftoken"].value != second.cookies["csrftoken"].value


@needs_django
@pytest.mark.usefixtures("dj")
def test_django_locale_middleware_varies_on_accept_language() -> None:
    middleware = ["django.middleware.locale.LocaleMiddleware"]
    with override_settings(
        MIDDLEWARE=middleware, USE_I18N=True, LANGUAGES=[("en", "English"), ("fr", "French")]
    ):
        client = Client()
        assert client.get("/locale/", HTTP_ACCEPT_LANGUAGE="fr").content == b"lang fr"
        assert client.get("/locale/", HTTP_ACCEPT_LANGUAGE="en").content == b"lang en"


@needs_django
@pytest.mark.usefixtures("dj")
def test_django_session_user_is_not_shared() -> None:
    middleware = ["django.contrib.sessions.middleware.SessionMiddleware"]
    with override_settings(MIDDLEWARE=middleware):
        alice, guest = Client(), Client()
        alice.get("/login/alice/")
        assert alice.get("/session/").content == b"hello alice"
        assert guest.get("/session/").content == b"hello guest"
        assert alice.get("/session/").content == b"hello alice"


@needs_django
@pytest.mark.usefixtures("dj")
def test_django_authorization_is_not_shared() -> None:
    client = Client()
    assert client.get("/auth/", HTTP_AUTHORIZATION="Bearer a").content == b"hello Bearer a"
    assert client.get("/auth/").content == b"hello guest"


@needs_django
@needs_django
@pytest.mark.usefixtures("dj")
@pytest.mark.parametrize("url", ["/cookie/", "/raw-cookie/"])
def test_django_view_reading_request_cookies_directly(url: str) -> None:
    alice, guest = Client(), Client()
    alice.cookies["uid"] = "alice"
    assert alice.get(url).content == b"hello alice"
    _visits(lambda c: c.get(url).content.decode(), alice, guest)


@needs_django
def test_django_ignore_cookies_in_cache_options(request: pytest.FixtureRequest) -> None:
    caches = {
        "default": {
            "BACKEND": "cachekit.integrations.django.CachekitCache",
            "LOCATION": "memory://",
            "KEY_PREFIX": unique_prefix(),
            "OPTIONS": {"ignore_cookies": ["_ga*"]},
        }
    }
    with override_settings(ROOT_URLCONF=__name__, CACHES=caches):
        tracked, alice = Client(), Client()
        tracked.cookies["_ga"] = "1"
        alice.cookies["uid"] = "alice"
        assert Client().get("/cookie/").content == b"hello guest"
        hit = tracked.get("/cookie/")
        assert hit.content == b"hello guest" and "hit" in hit["Cache-Status"]
        assert alice.get("/cookie/").content == b"hello alice"
    close_shared_caches()


# --- more Starlette ----------------------------------------------------------------------


def test_vary_cookie_variant_gives_no_304_to_another_cookie(cache: Cache) -> None:
    async def page(request: Request) -> Response:
        who = request.cookies.get("uid", "guest")
        return PlainTextResponse(f"page of {who}", headers={"Vary": "Cookie", "ETag": f'"{who}"'})

    client = _starlette(cache, page)
    assert client.get("/p", headers={"Cookie": "uid=alice"}).text == "page of alice"
    r = client.get("/p", headers={"Cookie": "uid=bob", "If-None-Match": '"alice"'})
    assert r.status_code == 200 and r.text == "page of bob"


def test_head_with_authorization_does_not_fill_the_get_entry(cache: Cache) -> None:
    async def page(request: Request) -> Response:
        return PlainTextResponse(f"hi {request.headers.get('authorization', 'guest')}")

    client = _starlette(cache, page)
    assert client.head("/p", headers={"Authorization": "Bearer alice"}).status_code == 200
    assert client.get("/p").text == "hi guest"


def test_state_user_set_by_outer_middleware_from_authorization(cache: Cache) -> None:
    from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint

    async def page(request: Request) -> Response:
        return PlainTextResponse(f"hi {getattr(request.state, 'user', 'guest')}")

    class Auth(BaseHTTPMiddleware):
        async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
            if "authorization" in request.headers:
                request.state.user = request.headers["authorization"]
            return await call_next(request)

    app = Starlette(routes=[Route("/p", page)])
    app.add_middleware(CacheMiddleware, cache=cache, ttl=60)
    app.add_middleware(Auth)  # outside the cache
    client = TestClient(app)
    assert client.get("/p", headers={"Authorization": "Bearer alice"}).text == "hi Bearer alice"
    assert client.get("/p").text == "hi guest"


@pytest.mark.parametrize("vary", ["accept-language ,X-TENANT", "Accept-Language,\tx-tenant", "*"])
def test_vary_lists_in_odd_spelling_are_honoured(cache: Cache, vary: str) -> None:
    async def page(request: Request) -> Response:
        return PlainTextResponse(f"t={request.headers.get('x-tenant')}", headers={"Vary": vary})

    client = _starlette(cache, page)
    assert client.get("/p", headers={"X-Tenant": "a"}).text == "t=a"
    assert client.get("/p", headers={"X-Tenant": "b"}).text == "t=b"


def test_public_response_that_sets_a_cookie_is_still_not_stored(cache: Cache) -> None:
    async def page(request: Request) -> Response:
        who = request.query_params.get("as", "guest")
        response = PlainTextResponse("welcome", headers={"Cache-Control": "public, max-age=60"})
        response.set_cookie("sid", who)
        return response

    client = _starlette(cache, page)
    assert client.get("/p?as=alice").headers["set-cookie"].startswith("sid=alice")
    client.cookies.clear()
    second = client.get("/p?as=alice")
    assert second.headers["set-cookie"].startswith("sid=alice")
    assert "hit" not in second.headers.get("cache-status", "")
