from __future__ import annotations

import asyncio
import inspect
from collections.abc import Iterator
from typing import Any

import pytest

import cachekit
from cachekit import Cache, cached, get_default_cache, set_default_cache


@pytest.fixture
def cache(any_cache: Cache) -> Iterator[Cache]:
    yield any_cache


def test_metadata_and_signature_kept(cache: Cache) -> None:
    def original(user_id: int, *, verbose: bool = False) -> dict[str, int]:
        """Docs."""
        return {"id": user_id}

    wrapped = cache.cached(ttl=10)(original)
    assert wrapped.__name__ == "original" and wrapped.__doc__ == "Docs."
    assert wrapped.__wrapped__ is original  # type: ignore[attr-defined]
    assert inspect.signature(wrapped) == inspect.signature(original)

    @cache.cached
    async def coro(x: int) -> int:
        return x

    assert inspect.iscoroutinefunction(coro)


def test_methods_classmethods_staticmethods(cache: Cache) -> None:
    calls: list[str] = []

    class Repo:
        def __init__(self, name: str) -> None:
            self.name = name

        def __cache_key__(self) -> str:
            return self.name

        @cache.cached(ttl=30)
        def find(self, item: int) -> str:
            calls.append(f"find {self.name} {item}")
            return f"{self.name}:{item}"

        @cache.cached(ttl=30)
        @classmethod
        def build(cls, n: int) -> str:
            calls.append(f"build {n}")
            return f"{cls.__name__}{n}"

        @cache.cached(ttl=30)
        @staticmethod
        def pure(n: int) -> int:
            calls.append(f"pure {n}")
            return n * n

    a, b = Repo("a"), Repo("b")
    assert [a.find(1), a.find(1), b.find(1), Repo("a").find(1)] == ["a:1", "a:1", "b:1", "a:1"]
    assert [Repo.build(2), a.build(2), Repo.pure(3), a.pure(3)] == ["Repo2", "Repo2", 9, 9]
    assert calls == ["find a 1", "find b 1", "build 2", "pure 3"]


def test_async_methods(cache: Cache) -> None:
    calls: list[int] = []

    class Service:
        def __cache_key__(self) -> str:  # self is an argument: it needs a value identity
            return "service"

        @cache.cached(ttl=30)
        async def fetch(self, n: int) -> list[int]:
            calls.append(n)
            return [n]

    service = Service()

    async def scenario() -> None:
        assert await service.fetch(1) == [1]
        assert await service.fetch(n=1) == [1]

    asyncio.run(scenario())
    assert calls == [1]


def test_cache_none_condition_unless(cache: Cache) -> None:
    calls: list[Any] = []

    @cache.cached(ttl=30)
    def maybe(x: int) -> int | None:
        calls.append(x)
        return None

    maybe(1)
    maybe(1)
    assert calls == [1]  # None is cached by default

    @cache.cached(ttl=30, cache_none=False)
    def maybe_not(x: int) -> int | None:
        calls.append(("n", x))
        return None

    maybe_not(1)
    maybe_not(1)
    assert calls.count(("n", 1)) == 2

    @cache.cached(ttl=30, condition=lambda r: r > 0, unless=lambda r: r == 13)
    def sign(x: int) -> int:
        calls.append(("s", x))
        return x

    for x in (-1, -1, 13, 13, 5, 5):
        sign(x)
    assert [c for c in calls if isinstance(c, tuple) and c[0] == "s"] == [("s", -1), ("s", -1), ("s", 13), ("s", 13), ("s", 5)]


def test_refresh_and_invalidate(cache: Cache) -> None:
    version = [1]

    @cache.cached(ttl=30, key="conf:{name}")
    def config(name: str) -> int:
        return version[0]

    assert config("a") == 1
    version[0] = 2
    assert config("a") == 1
    assert config.refresh("a") == 2  # type: ignore[attr-defined]
    assert config("a") == 2
    assert cache.get("conf:a") == 2
    assert config.key("a") == "conf:a"  # type: ignore[attr-defined]
    assert config.invalidate("a") is True  # type: ignore[attr-defined]
    assert config.invalidate("a") is False  # type: ignore[attr-defined]


def test_async_refresh(cache: Cache) -> None:
    version = [1]

    @cache.cached(ttl=30)
    async def current() -> int:
        return version[0]

    async def scenario() -> None:
        assert await current() == 1
        version[0] = 2
        assert await current() == 1
        assert await current.refresh() == 2  # type: ignore[attr-defined]
        assert await current() == 2

    asyncio.run(scenario())


def test_tags_are_stored(cache: Cache) -> None:
    @cache.cached(ttl=30, key="u:{uid}", tags=("users", "user:{uid}"))
    def user(uid: int) -> dict[str, int]:
        return {"id": uid}

    user(7)
    assert cache.get("u:7") == {"id": 7}
    stored = cache._backend.get(cache.make_key("u:7"))
    assert cache._codec.loads_meta(stored)[1] == {"tags": ["user:7", "users"]}


def test_ttl_is_applied(cache: Cache) -> None:
    @cache.cached(ttl=25)
    def f(x: int) -> int:
        return x

    f(1)
    left = cache.ttl(f.key(1))  # type: ignore[attr-defined]
    assert left is not None and 23 < left <= 25


def test_bad_options_fail_at_decoration(cache: Cache) -> None:
    with pytest.raises(TypeError):
        cache.cached(ttl="soon")(lambda: 1)
    with pytest.raises(cachekit.ConfigurationError):
        cache.cached(key="{missing}")(lambda x: x)
    with pytest.raises(cachekit.ConfigurationError):
        cache.cached(tags="users")(lambda x: x)


def test_unencodable_result_is_returned_not_cached(redis_url: str) -> None:
    cache = Cache(redis_url, prefix="unenc")
    calls: list[int] = []

    @cache.cached(ttl=30)
    def make(n: int) -> object:
        calls.append(n)
        return object()

    assert make(1) is not None and make(1) is not None
    assert calls == [1, 1]
    assert cache.stats()["unencodable"] == 2
    cache.close()


def test_module_level_cached_uses_default_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    set_default_cache(None)
    monkeypatch.setenv("CACHEKIT_URL", "fakeredis://module-default")
    monkeypatch.setenv("CACHEKIT_PREFIX", "modtest")
    try:
        calls: list[int] = []

        @cached(ttl=30)
        def f(x: int) -> int:
            calls.append(x)
            return x

        f(1)
        f(1)
        assert calls == [1]
        default = get_default_cache()
        assert default.prefix == "modtest" and default.stats()["backend"].startswith("fakeredis")
        assert default.get(f.key(1)) == 1  # type: ignore[attr-defined]
    finally:
        set_default_cache(None)


# -- default keys name the function: a second function of that name is refused ------------
def test_closures_of_one_factory_are_refused_a_shared_default_key(cache: Cache) -> None:
    # used to share entries: triple(5) returned double's 10
    def multiplier(n: int, name: str | None = None) -> Any:
        @cache.cached(name=name)
        def mul(x: int) -> int:
            return x * n

        return mul

    double = multiplier(2)
    assert double(5) == 10
    again = multiplier(2)  # the same code and captured values: the same function
    assert again(5) == 10
    with pytest.raises(cachekit.ConfigurationError, match="name="):
        multiplier(3)
    triple = multiplier(3, name="mul:3")  # what the error asks for
    assert double(5) == 10 and triple(5) == 15
    assert triple.key(5).startswith("mul:3:")


def test_another_lambda_or_local_function_of_the_same_name_is_refused(cache: Cache) -> None:
    first = cache.cached()(lambda x: x + 1)
    assert first(1) == 2
    with pytest.raises(cachekit.ConfigurationError):
        cache.cached()(lambda x: x + 2)
    assert cache.cached(name="plus-two")(lambda x: x + 2)(1) == 3

    @cache.cached()
    def load(x: int) -> str:
        return "first"

    with pytest.raises(cachekit.ConfigurationError):

        @cache.cached()
        def load(x: int) -> str:  # redefined: the point
            return "second"

    assert load(1) == "first"
    with pytest.raises(cachekit.ConfigurationError, match="not both"):
        cache.cached(name="n", key="k:{x}")(lambda x: x)
    with pytest.raises(cachekit.ConfigurationError, match="non-empty"):
        cache.cached(name="")(lambda x: x)


def test_a_body_run_again_decorates_freely() -> None:
    # A test re-run, a retry: the earlier function is gone, here in a reference cycle
    # (recursive: its closure holds its own wrapper) that only a collection frees; the new
    # one captures a new list, and is not refused. (In-process memory: fakeredis keeps the
    # traceback of its last NoScriptError, and with it the first function, alive.)
    cache = Cache("memory://")

    def body() -> list[int]:
        calls: list[int] = []

        @cache.cached()
        def countdown(n: int) -> int:
            calls.append(n)
            return 0 if n == 0 else countdown(n - 1)

        countdown(2)
        return calls

    assert body() == [2, 1, 0]
    assert body() == []  # a hit: the same code, and its result does not use the list
    cache.close()


def test_module_level_functions_of_one_name_take_over(cache: Cache) -> None:
    # importlib.reload: the module's functions are defined again under the same name
    source = "def report(x):\n    return x\n"
    namespace: dict[str, Any] = {"__name__": "reloaded_module"}
    exec(compile(source, "reloaded_module.py", "exec"), namespace)
    old = cache.cached()(namespace["report"])
    exec(compile(source + "\n", "reloaded_module.py", "exec"), namespace)
    new = cache.cached()(namespace["report"])  # no error: the reloaded definition
    assert old(1) == new(1) == 1
