"""Flask: app.session_interface = CachekitSessionInterface(cache), with real threads."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from cachekit.integrations.flask import CachekitSessionInterface
from flask import Flask, jsonify, session
from flask.typing import ResponseReturnValue

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


def make_app(cache: Cache, inside: threading.Semaphore | None = None,
             gate: threading.Event | None = None, **options: object) -> Flask:  # fmt: skip
    app = Flask(__name__)
    app.session_interface = CachekitSessionInterface(cache, **options)  # type: ignore[arg-type]

    @app.post("/set/<name>/<value>")
    def set_field(name: str, value: str) -> ResponseReturnValue:
        session[name] = value
        return "ok"

    @app.get("/show")
    def show() -> ResponseReturnValue:
        return jsonify(dict(session))

    @app.post("/login")
    def login() -> ResponseReturnValue:
        session["user"] = "alice"
        session.regenerate()  # type: ignore[attr-defined]
        return "ok"

    @app.post("/logout")
    def logout() -> ResponseReturnValue:
        session.clear()
        return "ok"

    @app.post("/slow/<name>")
    def slow(name: str) -> ResponseReturnValue:
        assert inside is not None and gate is not None
        dict(session)  # loaded
        inside.release()
        gate.wait(10)
        session[name] = 1
        return "ok"

    return app


def cookie_of(client: object) -> str:
    found = client.get_cookie("session")  # type: ignore[attr-defined]
    assert found is not None
    return str(found.value)


def test_cookie_flags(cache: Cache) -> None:
    client = make_app(cache).test_client()
    response = client.post("/set/a/1")
    header = response.headers["Set-Cookie"]
    assert "HttpOnly" in header and "Secure" in header and "SameSite=Lax" in header
    assert client.get("/show").json == {"a": "1"}
    assert "Set-Cookie" not in client.get("/show").headers
    insecure = make_app(cache, secure=False).test_client().post("/set/a/1")
    assert "Secure" not in insecure.headers["Set-Cookie"]


def test_threads_lose_no_update(cache: Cache) -> None:
    app = make_app(cache)
    first = app.test_client()
    first.post("/set/seed/0")
    cookie = cookie_of(first)

    def request(name: str) -> int:
        client = app.test_client()
        client.set_cookie("session", cookie)
        return client.post(f"/set/{name}/v").status_code

    with ThreadPoolExecutor(16) as pool:
        for batch in range(2):  # 2 x 100 parallel requests, distinct fields
            codes = list(pool.map(request, [f"f{batch}-{n}" for n in range(100)]))
            assert codes == [200] * 100
    assert len(first.get("/show").json) == 201


def test_in_flight_after_logout_resurrect_nothing(cache: Cache) -> None:
    inside, gate = threading.Semaphore(0), threading.Event()
    app = make_app(cache, inside, gate)
    owner = app.test_client()
    owner.post("/set/user/alice")
    cookie = cookie_of(owner)

    def late(n: int) -> int:
        client = app.test_client()
        client.set_cookie("session", cookie)
        return client.post(f"/slow/late{n}").status_code

    with ThreadPoolExecutor(50) as pool:
        futures = [pool.submit(late, n) for n in range(50)]
        for _ in range(50):
            assert inside.acquire(timeout=10)  # all 50 loaded the session
        owner.post("/logout")
        gate.set()
        assert [f.result() for f in futures] == [200] * 50
    probe = app.test_client()
    probe.set_cookie("session", cookie)
    assert probe.get("/show").json == {}
    assert cache._backend.exists(app.session_interface.store.key(cookie)) is False  # type: ignore[attr-defined]


def test_fixation_regenerate_and_tampering(cache: Cache) -> None:
    app = make_app(cache)
    attacker = app.test_client()
    attacker.set_cookie("session", "A" * 43)
    attacker.post("/set/x/1")
    assert cookie_of(attacker) != "A" * 43
    client = app.test_client()
    client.post("/set/cart/3")
    before = cookie_of(client)
    client.post("/login")
    after = cookie_of(client)
    assert after != before and client.get("/show").json == {"cart": "3", "user": "alice"}
    old = app.test_client()
    old.set_cookie("session", before)
    assert old.get("/show").json == {}
    tampered = app.test_client()
    tampered.set_cookie("session", after[:-1] + ("x" if after[-1] != "x" else "y"))
    assert tampered.get("/show").json == {}


def test_permanent_session_gets_max_age(cache: Cache) -> None:
    app = make_app(cache)

    @app.post("/remember")
    def remember() -> ResponseReturnValue:
        session.permanent = True
        session["u"] = 1
        return "ok"

    header = app.test_client().post("/remember").headers["Set-Cookie"]
    assert f"Max-Age={int(app.permanent_session_lifetime.total_seconds())}" in header
