"""Django: SESSION_ENGINE = "cachekit.integrations.django.sessions", with real threads."""

from __future__ import annotations

import threading
import types
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from django_settings import configure

configure("test_django")

from cachekit.integrations.django import close_shared_caches  # noqa: E402
from cachekit.integrations.django.sessions import SessionStore  # noqa: E402
from django.http import HttpRequest, HttpResponse, JsonResponse  # noqa: E402
from django.test import Client, override_settings  # noqa: E402
from django.urls import path  # noqa: E402

ENGINE = "cachekit.integrations.django.sessions"


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


inside = threading.Semaphore(0)
gate = threading.Event()


def set_field(request: HttpRequest, name: str, value: str) -> HttpResponse:
    request.session[name] = value
    return HttpResponse("ok")


def show(request: HttpRequest) -> HttpResponse:
    return JsonResponse(dict(request.session.items()))


def login(request: HttpRequest) -> HttpResponse:
    request.session.cycle_key()  # what django.contrib.auth.login does
    request.session["user"] = "alice"
    return HttpResponse("ok")


def logout(request: HttpRequest) -> HttpResponse:
    request.session.flush()  # what django.contrib.auth.logout does
    return HttpResponse("ok")


def slow(request: HttpRequest, name: str) -> HttpResponse:
    request.session.get("user")  # loaded
    inside.release()
    gate.wait(10)
    request.session[name] = 1
    return HttpResponse("ok")


def urls() -> types.ModuleType:
    module = types.ModuleType(f"urls_{uuid.uuid4().hex[:6]}")
    module.urlpatterns = [  # type: ignore[attr-defined]
        path("set/<name>/<value>", set_field),
        path("show", show),
        path("login", login),
        path("logout", logout),
        path("slow/<name>", slow),
    ]
    return module


def settings_for(caches: dict[str, Any]) -> override_settings:
    return override_settings(
        CACHES=caches,
        ROOT_URLCONF=urls(),
        SESSION_ENGINE=ENGINE,
        MIDDLEWARE=["django.contrib.sessions.middleware.SessionMiddleware"],
        SESSION_COOKIE_SECURE=True,
    )


def test_round_trip_only_changes_and_flags(caches: dict[str, Any]) -> None:
    with settings_for(caches):
        client = Client()
        response = client.get("/set/a/1")
        morsel = response.cookies["sessionid"]
        assert morsel["httponly"] and morsel["secure"] and morsel["samesite"] == "Lax"
        assert client.get("/show").json() == {"a": "1"}
        assert "sessionid" not in client.get("/show").cookies


def test_threads_lose_no_update(caches: dict[str, Any]) -> None:
    with settings_for(caches):
        first = Client()
        first.get("/set/seed/0")
        cookie = first.cookies["sessionid"].value

        def request(name: str) -> int:
            client = Client()
            client.cookies["sessionid"] = cookie
            return client.get(f"/set/{name}/v").status_code

        with ThreadPoolExecutor(16) as pool:
            for batch in range(2):
                codes = list(pool.map(request, [f"f{batch}-{n}" for n in range(100)]))
                assert codes == [200] * 100
        assert len(first.get("/show").json()) == 201


def test_in_flight_after_logout_resurrect_nothing(caches: dict[str, Any]) -> None:
    gate.clear()
    with settings_for(caches):
        owner = Client()
        owner.get("/set/user/alice")
        cookie = owner.cookies["sessionid"].value

        def late(n: int) -> int:
            client = Client(raise_request_exception=False)
            client.cookies["sessionid"] = cookie
            return client.get(f"/slow/late{n}").status_code

        with ThreadPoolExecutor(50) as pool:
            futures = [pool.submit(late, n) for n in range(50)]
            for _ in range(50):
                assert inside.acquire(timeout=10)
            owner.get("/logout")
            gate.set()
            # Django answers a save of a deleted session with SessionInterrupted (400)
            assert [f.result() for f in futures] == [400] * 50
        assert not SessionStore().exists(cookie)
        probe = Client()
        probe.cookies["sessionid"] = cookie
        assert probe.get("/show").json() == {}


def test_fixation_and_cycle_key(caches: dict[str, Any]) -> None:
    with settings_for(caches):
        attacker = Client()
        attacker.cookies["sessionid"] = "A" * 43
        attacker.get("/set/x/1")
        assert attacker.cookies["sessionid"].value != "A" * 43
        client = Client()
        client.get("/set/cart/3")
        before = client.cookies["sessionid"].value
        client.get("/login")
        after = client.cookies["sessionid"].value
        assert after != before
        assert client.get("/show").json() == {"cart": "3", "user": "alice"}
        assert not SessionStore().exists(before)
        garbage = Client()
        garbage.cookies["sessionid"] = "../../etc"
        assert garbage.get("/show").json() == {}


def test_store_api(caches: dict[str, Any]) -> None:
    with settings_for(caches):
        store = SessionStore()
        store["a"] = 1
        store.save()
        key = store.session_key
        assert key is not None and SessionStore().exists(key)
        again = SessionStore(key)
        assert again["a"] == 1
        again.delete()
        assert not SessionStore().exists(key)
        assert SessionStore("A" * 43).load() == {}
        SessionStore.clear_expired()
