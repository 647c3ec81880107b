"""Type-checked by mypy in CI (not run): what @cached does to a signature."""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any, assert_type

from cachekit import Cache, cached

cache = Cache()


@cache.cached(ttl=60, key="user:{user_id}")
def get_user(user_id: int, verbose: bool = False) -> dict[str, int]:
    return {"id": user_id}


@cache.cached
async def fetch(url: str) -> bytes:
    return url.encode()


@cached(ttl=5)
def square(x: float) -> float:
    return x * x


@cached
def cube(x: float) -> float:
    return x * x * x


class Repo:
    @cache.cached(ttl=10)
    def find(self, item: int) -> str:
        return str(item)

    # classmethod / staticmethod outermost: both orders work at run time; this one is
    # what type checkers understand
    @classmethod
    @cache.cached(ttl=10)
    def build(cls, n: int) -> Repo:
        return cls()

    @staticmethod
    @cache.cached(ttl=10)
    def pure(n: int) -> int:
        return n


assert_type(get_user(1), dict[str, int])
assert_type(get_user(user_id=1, verbose=True), dict[str, int])
assert_type(get_user.invalidate(1), bool)
assert_type(get_user.key(1, verbose=True), str)
assert_type(get_user.refresh(2), dict[str, int])
assert_type(get_user.__wrapped__(1), dict[str, int])
assert_type(square(2.0), float)
assert_type(cube.invalidate(2.0), bool)
assert_type(Repo().find(3), str)
assert_type(Repo.find.invalidate(Repo(), 3), bool)
# Repo.build(1): mypy binds cls only for plain functions, not callable objects, so a
# cached classmethod's call is not checked (a known limitation, see cachekit/decorator/types.py)
assert_type(Repo.pure(1), int)
refreshing: Coroutine[Any, Any, bytes] = fetch.refresh("u")


async def use() -> None:
    assert_type(await fetch("x"), bytes)
    assert_type(await fetch.ainvalidate("x"), bool)


# the stampede options are typed once (cachekit.decorator.types.StampedeKeywords): the
# right ones type-check on every signature that takes them, a misspelt or mistyped one is
# an error (the ignores below must be needed: warn_unused_ignores)
@cache.cached(ttl=60, lock=True, lock_ttl=5.0, lock_timeout=None, early_refresh=0.5)
def locked(n: int) -> int:
    return n


@cached(stale_ttl=30, stale_if_error=True, tags=("t",), cache_none=False)
async def stale(n: int) -> int:
    return n


assert_type(locked(1), int)
assert_type(cache.get_or_set("k", lambda: 1, 60, lock=True, stale_ttl=5.0), Any)


cache.cached(ttl=60, lokc=True)  # type: ignore[call-overload]
cached(stale_tll=30)  # type: ignore[call-overload]
cache.cached(lock="yes")  # type: ignore[call-overload]
cache.get_or_set("k", lambda: 1, lock_tll=5.0)  # type: ignore[call-arg]


async def use_get_or_set() -> None:
    await cache.aget_or_set("k", lambda: 1, early_refesh=True)  # type: ignore[call-arg]
