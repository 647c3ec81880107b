"""Every fenced Python block of README.md runs, as written, on memory and on a real
redis-server, and the integration blocks answer requests through their framework's test
client. The README's set-up commands are the ones CI (.ci/run) runs.

Extraction is Sybil's (``sybil.parsers.markdown.CodeBlockParser``, a test dependency):
it parses CommonMark fences properly and gives each block's line, so a failure points at
README.md's own line. Sybil's usual pytest integration runs a document's blocks in one
shared namespace and collects files outside ``testpaths`` only through a root conftest;
here each block is its own test, starting from a fresh namespace
(tests/readme_fixtures.py: ``db``, ``User``, ...), so one broken block does not hide the
others and an expected failure can name one block on one backend.

How a block runs:

- the README's Redis URL is replaced by the test's own server (a fresh redis-server per
  test, never 127.0.0.1:6379), or by ``memory://`` for the memory run; ``CACHEKIT_URL``
  points at the same place for ``Cache.from_env()`` and the module-level ``@cached``;
- on Redis the test asserts the block really talked to that server (commands counted,
  and entries left where the block leaves any);
- top-level ``await`` / ``async with`` are allowed, as in ``python -m asyncio``;
- then the block's exercise (below) calls what it defined: cached functions run once, a
  second request is a hit.
"""

from __future__ import annotations

import ast
import asyncio
import inspect
import re
import subprocess
import sys
import time
import types
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fakeredis
import pytest
import redis
from readme_fixtures import README_CLUSTER_NODES, README_REDIS_URL, README_SENTINEL, namespace
from sybil import Document
from sybil.parsers.markdown import CodeBlockParser

import cachekit
from cachekit import Cache, set_default_cache
from cachekit.testing import CacheContract

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
CI = ROOT / ".ci" / "run"


@dataclass(frozen=True)
class Block:
    id: str  # the section's heading as a slug, "-2" for its second block, ...
    line: int  # of the block's first source line in README.md
    source: str


def _slug(heading: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", heading.lower()).strip("-")


def _headings(text: str) -> list[tuple[int, str]]:
    """(offset, slug) of each Markdown heading, not counting ``#`` comments in code."""
    found: list[tuple[int, str]] = []
    offset, in_fence = 0, False
    for line in text.splitlines(keepends=True):
        if line.startswith(("```", "~~~")):
            in_fence = not in_fence
        elif not in_fence and (m := re.match(r"#+ (.+)$", line)):
            found.append((offset, _slug(m.group(1))))
        offset += len(line)
    return found


def readme_blocks(language: str) -> list[Block]:
    document = Document.parse(str(README), CodeBlockParser(language=language))
    text = document.text
    headings = _headings(text)
    blocks: list[Block] = []
    seen: dict[str, int] = {}
    for start, region in document.regions:
        heading = [slug for at, slug in headings if at < start][-1]
        seen[heading] = seen.get(heading, 0) + 1
        block_id = heading if seen[heading] == 1 else f"{heading}-{seen[heading]}"
        source = str(region.parsed)
        line = text.count("\n", 0, start) + 2  # the line after the opening fence
        blocks.append(Block(block_id, line, source))
    return blocks


BLOCKS = readme_blocks("python")

# ---------------------------------------------------------------------------------------
# Blocks known to fail until a fix lands elsewhere: (block, backend) -> why. Strict: when
# the fix lands, the entry fails the run ("XPASS") until it is removed from this list.
EXPECTED_FAILURES: dict[tuple[str, str], str] = {
    # e.g. ("starlette-fastapi", "redis"): "nested cache layers wait on each other's lock",
}
# ---------------------------------------------------------------------------------------

# blocks that leave no entry behind on Redis (the test still checks they sent commands,
# unless they are in NO_REDIS_IO)
LEAVES_NO_ENTRIES = {
    "use-2": "ends with cache.clear()",
    "health-checks-2": "answers a health check: a ping, no entry",
}
NO_REDIS_IO = {"testing-your-own-backend": "defines a test class over a custom backend"}


# -- the exercises: what a reader would do next with what the block defined -------------


def _twice(func: Callable[..., Any], *args: Any) -> list[Any]:
    if inspect.iscoroutinefunction(func):

        async def both() -> list[Any]:
            return [await func(*args), await func(*args)]

        return asyncio.run(both())
    return [func(*args), func(*args)]


def exercise_use(ns: dict[str, Any]) -> None:
    db, http_get = ns["db"], ns["http_get"]
    reads = db.reads
    assert _twice(ns["get_user"], 1) == [{"id": 1, "name": "Grace"}] * 2
    assert db.reads == reads + 1
    assert _twice(ns["fetch"], "https://example.org/") == [b"<html>https://example.org/</html>"] * 2
    assert http_get.calls == 1
    assert _twice(ns["slow_square"], 7) == [49, 49]
    assert cachekit.get_default_cache().stats()["hits"] >= 1


def exercise_testing_your_own_backend(ns: dict[str, Any]) -> None:
    assert issubclass(ns["TestMyBackend"], CacheContract)


def exercise_strategies(ns: dict[str, Any]) -> None:
    # write-through's store(42, user), then write-behind's store_many({42: user})
    assert ns["db"].stored == [42, 42]


def exercise_starlette_fastapi(ns: dict[str, Any]) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # starlette warns when it finds httpx, not httpx2
        from starlette.testclient import TestClient

    with TestClient(ns["app"]) as client:
        for path in ("/products/1", "/products/2"):
            timings = []
            responses = []
            for _ in range(2):
                started = time.monotonic()
                responses.append(client.get(path))
                timings.append(time.monotonic() - started)
            first, second = responses
            assert first.status_code == second.status_code == 200, first.text
            assert first.json() == second.json() == {"id": int(path[-1])}
            assert "hit" in second.headers["cache-status"]
            assert max(timings) < 5.0, timings  # no layer waits on another's lock (was 10 s)


def exercise_integrations(ns: dict[str, Any]) -> None:
    """Cookies: ignored ones share pages, varied ones select one, any other bypasses."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from starlette.testclient import TestClient

    def get(**cookies: str) -> Any:
        client = TestClient(ns["app"])
        for name, value in cookies.items():
            client.cookies.set(name, value)
        return client.get("/")

    assert get().text == "hello in en"
    assert "hit" in get(_ga="1").headers["cache-status"]
    assert get(lang="fr").text == "hello in fr" and get(lang="fr", _ga="2").text == "hello in fr"
    assert "hit" in get(lang="fr").headers["cache-status"]
    assert get(sid="x").headers["cache-status"] == "cachekit; fwd=bypass"


def exercise_flask(ns: dict[str, Any]) -> None:
    client = ns["app"].test_client()
    first, second = client.get("/products/1"), client.get("/products/1")
    assert first.status_code == second.status_code == 200
    assert first.get_json() == second.get_json() == {"id": 1}
    assert "hit" in second.headers["Cache-Status"]
    # a plain cached function, called outside any request or app context
    assert _twice(ns["load_prices"], "eu") == [None, None]


def prepare_django() -> None:
    """Django's settings are configured before a project's views.py is imported (once per
    process, shared with test_django.py, whose module is the default URLconf; the README's
    views get theirs through override_settings)."""
    from django_settings import configure

    configure("test_django")


def exercise_django(ns: dict[str, Any]) -> None:
    from cachekit.integrations.django import close_shared_caches
    from django.test import Client, override_settings
    from django.urls import path

    urls = types.ModuleType("readme_urls")  # the project's urls.py
    urls.urlpatterns = [path("catalogue/", ns["catalogue"])]  # type: ignore[attr-defined]
    try:
        with override_settings(CACHES=ns["CACHES"], ROOT_URLCONF=urls):
            client = Client()
            first, second = client.get("/catalogue/"), client.get("/catalogue/")
            assert first.status_code == second.status_code == 200
            assert first.content == second.content
            assert "hit" in second.headers["Cache-Status"]
    finally:
        close_shared_caches()


def _assert_limited(responses: list[Any], limit: int) -> None:
    """``limit`` answers admitted with the RateLimit headers, then 429 with Retry-After."""
    statuses = [r.status_code for r in responses]
    assert statuses == [200] * limit + [429] * (len(statuses) - limit), statuses
    assert all("RateLimit" in r.headers and "RateLimit-Policy" in r.headers for r in responses)
    assert int(responses[-1].headers["Retry-After"]) >= 1


def exercise_rate_limits_in_starlette_fastapi(ns: dict[str, Any]) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from starlette.testclient import TestClient

    with TestClient(ns["app"]) as client:
        _assert_limited([client.post("/login") for _ in range(6)], 5)


def exercise_rate_limits_in_flask(ns: dict[str, Any]) -> None:
    client = ns["app"].test_client()
    _assert_limited([client.post("/login") for _ in range(6)], 5)


def exercise_rate_limits_in_django(ns: dict[str, Any]) -> None:
    from cachekit.integrations.django import close_shared_caches
    from django.test import Client, override_settings
    from django.urls import path

    urls = types.ModuleType("readme_ratelimit_urls")
    urls.urlpatterns = [path("login/", ns["login"])]  # type: ignore[attr-defined]
    caches = {
        "default": {
            "BACKEND": "cachekit.integrations.django.CachekitCache",
            "LOCATION": ns["cache"].url,
        }
    }
    settings = {"MIDDLEWARE": ns["MIDDLEWARE"], "CACHEKIT_RATELIMIT": ns["CACHEKIT_RATELIMIT"]}
    try:
        with override_settings(CACHES=caches, ROOT_URLCONF=urls, **settings):
            client = Client()
            _assert_limited([client.post("/login/") for _ in range(6)], 5)
    finally:
        close_shared_caches()


def _assert_session_flow(client: Any) -> None:
    """Log in (a cookie with the flags), read it back, and (where the block has it) log out."""
    first = client.post("/login")
    header = first.headers["set-cookie"]
    assert "HttpOnly" in header and "Secure" in header and "SameSite=Lax" in header
    assert client.get("/me").json() == {"user": "alice"}


def exercise_sessions_in_starlette_fastapi(ns: dict[str, Any]) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from starlette.testclient import TestClient

    with TestClient(ns["app"], base_url="https://testserver") as client:
        _assert_session_flow(client)
        client.post("/logout")
        assert client.get("/me").json() == {"user": None}
        client.post("/login")  # a live session is left on the server (checked on Redis)


def exercise_sessions_in_flask(ns: dict[str, Any]) -> None:
    client = ns["app"].test_client()
    first = client.post("/login", base_url="https://localhost")
    assert "Secure" in first.headers["Set-Cookie"]
    assert client.get("/me", base_url="https://localhost").get_json() == {"user": "alice"}


def exercise_sessions_in_django(ns: dict[str, Any]) -> None:
    from cachekit.integrations.django import close_shared_caches
    from django.http import HttpRequest, JsonResponse
    from django.test import Client, override_settings
    from django.urls import path

    def login(request: HttpRequest) -> JsonResponse:
        request.session.cycle_key()
        request.session["user"] = "alice"
        return JsonResponse({"ok": True})

    def me(request: HttpRequest) -> JsonResponse:
        return JsonResponse({"user": request.session.get("user")})

    urls = types.ModuleType("readme_session_urls")
    urls.urlpatterns = [path("login", login), path("me", me)]  # type: ignore[attr-defined]
    names = ("CACHES", "SESSION_ENGINE", "CACHEKIT_SESSION_IDLE_TIMEOUT",
             "CACHEKIT_SESSION_ABSOLUTE_TIMEOUT", "SESSION_COOKIE_SECURE")  # fmt: skip
    settings = {name: ns[name] for name in names}
    middleware = ["django.contrib.sessions.middleware.SessionMiddleware"]
    try:
        with override_settings(ROOT_URLCONF=urls, MIDDLEWARE=middleware, **settings):
            client = Client()
            first = client.post("/login")
            assert first.cookies["sessionid"]["secure"]
            assert client.get("/me").json() == {"user": "alice"}
    finally:
        close_shared_caches()


PREPARE: dict[str, Callable[[], None]] = {
    "django": prepare_django,
    "rate-limits-in-django": prepare_django,
    "sessions-in-django": prepare_django,
}

EXERCISES: dict[str, Callable[[dict[str, Any]], None]] = {
    "use": exercise_use,
    "testing-your-own-backend": exercise_testing_your_own_backend,
    "strategies": exercise_strategies,
    "integrations": exercise_integrations,
    "starlette-fastapi": exercise_starlette_fastapi,
    "flask": exercise_flask,
    "django": exercise_django,
    "rate-limits-in-starlette-fastapi": exercise_rate_limits_in_starlette_fastapi,
    "rate-limits-in-flask": exercise_rate_limits_in_flask,
    "rate-limits-in-django": exercise_rate_limits_in_django,
    "sessions-in-starlette-fastapi": exercise_sessions_in_starlette_fastapi,
    "sessions-in-flask": exercise_sessions_in_flask,
    "sessions-in-django": exercise_sessions_in_django,
}

# -- running a block ---------------------------------------------------------------------


def run_block(block: Block, source: str, ns: dict[str, Any]) -> None:
    # README.md's own line numbers in tracebacks
    padded = "\n" * (block.line - 1) + source
    code = compile(
        padded, str(README), "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT, dont_inherit=True
    )
    if code.co_flags & inspect.CO_COROUTINE:
        asyncio.run(eval(code, ns))  # top-level await: run the block in an event loop
    else:
        exec(code, ns)


def _commands(client: redis.Redis) -> int:
    return int(client.info("stats")["total_commands_processed"])


def _backends_of(block: Block) -> tuple[str, ...]:
    """A block naming a Redis Cluster or Sentinel runs on the test's own (conftest's
    ``redis_cluster`` / ``redis_sentinel``); every other block on memory and on Redis."""
    if "redis+cluster://" in block.source:
        return ("cluster",)
    if "redis+sentinel://" in block.source:
        return ("sentinel",)
    return ("memory", "redis")


class _Nodes:
    """The servers of a cluster or a sentinel's primary, read as one for the checks below."""

    def __init__(self, ports: list[int]) -> None:
        self.clients = [redis.Redis(port=port) for port in ports]

    def info(self, section: str) -> dict[str, int]:
        total = sum(int(c.info(section)["total_commands_processed"]) for c in self.clients)
        return {"total_commands_processed": total}

    def keys(self, pattern: str) -> list[bytes]:
        return [key for c in self.clients for key in c.keys(pattern)]

    def close(self) -> None:
        for c in self.clients:
            c.close()


def _topology(backend: str, request: pytest.FixtureRequest, source: str) -> tuple[str, Any]:
    """The block's source pointed at the test's cluster or sentinel, and its servers."""
    if backend == "cluster":
        cluster = request.getfixturevalue("redis_cluster")
        ports = cluster.ports
        for node, port in zip(README_CLUSTER_NODES, ports, strict=False):
            source = source.replace(node, f"127.0.0.1:{port}")
            source = source.replace(f"port={node.rsplit(':', 1)[1]}", f"port={port}")
        return source, _Nodes([n.port for n in cluster.primaries()])
    sentinel = request.getfixturevalue("redis_sentinel")
    port = sentinel.sentinels[0].port
    host, readme_port = README_SENTINEL.rsplit(":", 1)
    source = source.replace(README_SENTINEL, f"127.0.0.1:{port}")
    source = source.replace(f'("{host}", {readme_port})', f'("127.0.0.1", {port})')
    return source, _Nodes([sentinel.primary_port()])


def _cases() -> Iterator[Any]:
    for block in BLOCKS:
        for backend in _backends_of(block):
            reason = EXPECTED_FAILURES.get((block.id, backend))
            marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
            yield pytest.param(block, backend, id=f"{block.id}-{backend}", marks=marks)


@pytest.mark.parametrize(("block", "backend"), list(_cases()))
def test_readme_block(
    block: Block, backend: str, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = block.source
    if backend == "redis":
        server = request.getfixturevalue("private_redis")
        url = server.url
        client: Any = redis.Redis.from_url(url)
    elif backend in ("cluster", "sentinel"):
        source, client = _topology(backend, request, source)
        url = "memory://"  # CACHEKIT_URL of from_env(): not what these blocks use
        for named in (*README_CLUSTER_NODES, README_SENTINEL):
            assert named not in source, f"a README block names {named}, not redirected"
    else:
        url = "memory://"
        client = fakeredis.FakeRedis()
    source = source.replace(README_REDIS_URL, url)
    if backend in ("memory", "redis"):
        assert "6379" not in source, "a README block names a Redis the test cannot redirect"
    monkeypatch.setenv("CACHEKIT_URL", url)
    monkeypatch.setenv("CACHEKIT_PREFIX", "readme")
    set_default_cache(None)
    ns = namespace(url, existing_redis_client=client)
    before = _commands(client) if backend != "memory" else 0
    try:
        if block.id in PREPARE:
            PREPARE[block.id]()
        run_block(block, source, ns)
        exercise = EXERCISES.get(block.id)
        if exercise is not None:
            exercise(ns)
        if backend != "memory" and block.id not in NO_REDIS_IO:
            # the block really used the test's server: it sent commands, left entries
            assert _commands(client) - before > 1, "the block never reached the test's Redis"
            if block.id not in LEAVES_NO_ENTRIES:
                assert client.keys("*"), "the block stored nothing on the test's Redis"
    finally:
        for value in list(ns.values()):
            if isinstance(value, Cache):
                value.close()
        cachekit.get_default_cache().close()
        set_default_cache(None)
        client.close()


# -- the set-up commands -----------------------------------------------------------------


def test_ci_runs_the_readme_setup_commands_verbatim() -> None:
    """The README's demo and test commands are the ones .ci/run runs, character for
    character (CI checks the demo's output mentions hits)."""
    commands = [b.source.strip() for b in readme_blocks("sh") if b.id.startswith("set-up")]
    assert len(commands) == 2 and "cachekit.demo" in commands[0] and "pytest" in commands[1]
    ci = CI.read_text()
    for command in commands:
        assert command in ci, f"{command!r} is not what .ci/run runs"


def test_the_demo_serves_hits() -> None:
    """The README's demo (its last step, ``python -m cachekit.demo``), as CI runs it."""
    demo = next(b.source for b in readme_blocks("sh") if "cachekit.demo" in b.source)
    module = demo.strip().rsplit(" -m ", 1)[1]
    done = subprocess.run(
        [sys.executable, "-m", module], capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    assert done.returncode == 0, done.stderr
    hits = re.search(r"(\d+) hits", done.stdout)
    assert hits and int(hits.group(1)) > 0, done.stdout


def test_every_python_block_is_run() -> None:
    """No block is skipped silently: each section with code has its exercise or is run
    as is (the parametrisation above covers every block)."""
    ids = {block.id for block in BLOCKS}
    assert set(EXERCISES) <= ids, set(EXERCISES) - ids
    assert {block for block, _ in EXPECTED_FAILURES} <= ids
    assert len(BLOCKS) >= 7


@pytest.mark.parametrize("doc", ["README.md", "benchmarks/README.md"])
def test_documents_speak_to_users(doc: str) -> None:
    """No project-internal bookkeeping (issue numbers, "Target (issue 2)") in the docs."""
    text = (ROOT / doc).read_text()
    assert not re.findall(r"(?i)\bissues? #?\d+", text)
