"""Type-checked by mypy in CI (not run): what @cached does to a signature."""

from __future__ import annotations

from typing import assert_type

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


class Repo:
    @cache.cached(ttl=10)
    def find(self, item: int) -> str:
        return str(item)


assert_type(get_user(1), dict[str, int])
assert_type(get_user(user_id=1, verbose=True), dict[str, int])
assert_type(Repo().find(3), str)


async def use() -> None:
    assert_type(await fetch("x"), bytes)
