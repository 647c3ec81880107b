"""A user's file, type-checked by mypy in CI (.ci/run) from OUTSIDE the checkout, against the
venv of the README's editable install: cachekit must be visible to type checkers there,
with its py.typed types, integrations included (not run). It is not in tests/type_check:
checked from inside the checkout, mypy would find the checkout's cachekit/ first."""

from __future__ import annotations

from typing import Any, assert_type

from cachekit.integrations.flask import FlaskCache
from flask import Flask

from cachekit import Cache, CachedFunction, cached

cache = Cache()
app = Flask(__name__)
fcache = FlaskCache(app)


@cache.cached(ttl=60, key="user:{user_id}")
def get_user(user_id: int) -> dict[str, int]:
    return {"id": user_id}


@cached(ttl=30)
def square(x: float) -> float:
    return x * x


assert_type(get_user(1), dict[str, int])
assert_type(square(2.0), float)
assert_type(get_user.key(1), str)
get_user.invalidate(1)
f: CachedFunction[[float], float] = square


@cache.cached(ttl=60, lock=True, stale_ttl=30, stale_if_error=True)
def get_report(day: int) -> list[int]:
    return [day]


assert_type(get_report(1), list[int])
assert_type(cache.get_or_set("k", lambda: 1, 60, lock=True, early_refresh=True), Any)
# a misspelt stampede option is a type error (the ignores must be needed: --strict)
cache.cached(ttl=60, stale_tll=30)  # type: ignore[call-overload]
cached(lokc=True)  # type: ignore[call-overload]
cache.get_or_set("k", lambda: 1, lock_tll=5.0)  # type: ignore[call-arg]
