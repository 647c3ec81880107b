"""Type-checked by mypy in CI (not run): rate limits keep signatures and type decisions."""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any, assert_type

from cachekit import Cache, RateLimited
from cachekit.ratelimit import Decision, RateLimiter

cache = Cache()
limiter = cache.rate_limiter("api", rate="100/minute", burst=20, algorithm="gcra")
assert_type(limiter, RateLimiter)
assert_type(limiter.hit("user:42"), Decision)
deciding: Coroutine[Any, Any, Decision] = limiter.ahit("user:42", cost=2)
assert_type(limiter.peek(42), Decision)
assert_type(limiter.reset(("tenant", 1)), bool)
decision = limiter.hit("u")
assert_type(decision.allowed, bool)
assert_type(decision.retry_after, float)
assert_type(decision.remaining, int)


@cache.rate_limit("10/second", key="{user_id}")
def search(user_id: int, query: str = "") -> list[str]:
    return [query]


@cache.rate_limit("10/second")
async def upload(data: bytes) -> int:
    return len(data)


assert_type(search(1, query="x"), list[str])
uploading: Coroutine[Any, Any, int] = upload(b"x")
search(1, "q")
search(user_id=2)
search("nope")  # type: ignore[arg-type]

try:
    search(1)
except RateLimited as refused:
    assert_type(refused.retry_after, float)
