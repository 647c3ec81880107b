"""Django: @ratelimit on sync and async views, RateLimitMiddleware with a default rate, 429
with Retry-After and the RateLimit headers, X-Forwarded-For only from trusted proxies."""

from __future__ import annotations

import types
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from django_settings import configure

configure("test_django")

from cachekit.integrations.django import RateLimitMiddleware, close_shared_caches, ratelimit  # noqa: E402
from django.http import HttpRequest, HttpResponse  # noqa: E402
from django.test import AsyncClient, Client, override_settings  # noqa: E402
from django.urls import path  # noqa: E402

from cachekit import Cache  # noqa: E402
from cachekit.exceptions import ConfigurationError  # noqa: E402

MIDDLEWARE = "cachekit.integrations.django.RateLimitMiddleware"


@pytest.fixture(params=["memory", "redis"])
def caches(request: pytest.FixtureRequest) -> Iterator[dict[str, Any]]:
    location = "memory://" if request.param == "memory" else request.getfixturevalue("redis_url")
    yield {
        "default": {
            "BACKEND": "cachekit.integrations.django.CachekitCache",
            "LOCATION": location,
            "KEY_PREFIX": f"d{uuid.uuid4().hex[:10]}",
        }
    }
    close_shared_caches()


def urls(**views: Any) -> types.ModuleType:
    module = types.ModuleType(f"urls_{uuid.uuid4().hex[:6]}")
    module.urlpatterns = [path(f"{name}/", view, name=name) for name, view in views.items()]  # type: ignore[attr-defined]
    return module


def test_view_decorator_sync_and_async(caches: dict[str, Any]) -> None:
    calls = []

    @ratelimit("2/minute", name="login", algorithm="fixed")
    def login(request: HttpRequest) -> HttpResponse:
        calls.append(1)
        return HttpResponse("welcome")

    @ratelimit("1/minute", name="later")
    async def later(request: HttpRequest) -> HttpResponse:
        return HttpResponse("later")

    with override_settings(CACHES=caches, ROOT_URLCONF=urls(login=login, later=later)):
        client = Client()
        first = client.post("/login/")
        assert first.status_code == 200 and first.content == b"welcome"
        assert first.headers["RateLimit-Policy"] == '"login";q=2;w=60'
        assert first.headers["RateLimit"] == '"login";r=1;t=60'
        client.post("/login/")
        refused = client.post("/login/")
        assert refused.status_code == 429 and 58 <= int(refused.headers["Retry-After"]) <= 60
        assert len(calls) == 2
        assert client.post("/login/", REMOTE_ADDR="192.0.2.1").status_code == 200
        assert client.get("/later/").status_code == 200
        assert client.get("/later/").status_code == 429


async def test_async_client_and_view(caches: dict[str, Any]) -> None:
    @ratelimit("1/minute", name="a")
    async def view(request: HttpRequest) -> HttpResponse:
        return HttpResponse("a")

    with override_settings(CACHES=caches, ROOT_URLCONF=urls(view=view)):
        client = AsyncClient()
        assert (await client.get("/view/")).status_code == 200
        assert (await client.get("/view/")).status_code == 429


@pytest.mark.parametrize("client_class", [Client, AsyncClient])
async def test_middleware_default_exempt_and_own_limits(
    caches: dict[str, Any], client_class: type
) -> None:
    def index(request: HttpRequest) -> HttpResponse:
        return HttpResponse("index")

    def health(request: HttpRequest) -> HttpResponse:
        return HttpResponse("ok")

    @ratelimit("3/minute", name="search")
    def search(request: HttpRequest) -> HttpResponse:
        return HttpResponse("found")

    setting = {"default": "1/minute", "exempt": ["/health/"], "legacy_headers": True}
    with override_settings(
        CACHES=caches,
        MIDDLEWARE=[MIDDLEWARE],
        CACHEKIT_RATELIMIT=setting,
        ROOT_URLCONF=urls(index=index, health=health, search=search),
    ):
        client = client_class()

        async def get(url: str, **extra: Any) -> Any:
            response = client.get(url, **extra)
            return (await response) if client_class is AsyncClient else response

        ok = await get("/index/")
        assert ok.status_code == 200 and ok.headers["RateLimit"] == '"http";r=0;t=60'
        assert ok.headers["X-RateLimit-Limit"] == "1"
        refused = await get("/index/", HTTP_X_FORWARDED_FOR="9.9.9.9")  # not trusted: ignored
        assert refused.status_code == 429 and "Retry-After" in refused.headers
        assert [(await get("/health/")).status_code for _ in range(3)] == [200] * 3
        assert [(await get("/search/")).status_code for _ in range(4)] == [200] * 3 + [429]


def test_trusted_proxies(caches: dict[str, Any]) -> None:
    @ratelimit("1/minute", trusted_proxies=["127.0.0.0/8"])
    def view(request: HttpRequest) -> HttpResponse:
        return HttpResponse("v")

    with override_settings(CACHES=caches, ROOT_URLCONF=urls(view=view)):
        client = Client()
        assert client.get("/view/", HTTP_X_FORWARDED_FOR="198.51.100.1").status_code == 200
        assert client.get("/view/", HTTP_X_FORWARDED_FOR="198.51.100.2").status_code == 200
        assert client.get("/view/", HTTP_X_FORWARDED_FOR="198.51.100.1").status_code == 429


def test_cache_must_be_cachekit(caches: dict[str, Any]) -> None:
    @ratelimit("1/minute", cache="other")
    def view(request: HttpRequest) -> HttpResponse:
        return HttpResponse("v")

    other = {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}
    with (
        override_settings(CACHES={**caches, "other": other}, ROOT_URLCONF=urls(view=view)),
        pytest.raises(ConfigurationError, match="cachekit backend"),
    ):
        Client().get("/view/")
    with pytest.raises(ConfigurationError):
        ratelimit("1/minute", algoritm="fixed")
    with (
        override_settings(CACHES=caches, CACHEKIT_RATELIMIT={"default": "1/minute", "oops": 1}),
        pytest.raises(ConfigurationError, match="oops"),
    ):
        RateLimitMiddleware(lambda request: HttpResponse())


def test_a_cachekit_cache_object(caches: dict[str, Any]) -> None:
    own = Cache("memory://", prefix="own")

    @ratelimit("1/minute", cache=own, name="own")
    def view(request: HttpRequest) -> HttpResponse:
        return HttpResponse("v")

    with override_settings(CACHES=caches, ROOT_URLCONF=urls(view=view)):
        assert Client().get("/view/").status_code == 200
        assert not own.rate_limiter("own", rate="1/minute").peek("127.0.0.1").allowed
