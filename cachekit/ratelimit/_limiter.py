"""The public limiter (sync and async methods on one object, as :class:`~cachekit.Cache`)
and the ``@cache.rate_limit`` decorator."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from ..core.keys import KeyBuilder
from ..exceptions import RateLimited
from ._async_limiter import AsyncRateLimiterOps
from ._sync_limiter import RateLimiterOps

if TYPE_CHECKING:
    from .._cache import Cache
    from .rules import Rate

__all__ = ["RateLimiter", "rate_limit"]

_P = ParamSpec("_P")
_R = TypeVar("_R")


def _shared(args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    return "*"


class RateLimiter(RateLimiterOps, AsyncRateLimiterOps):
    """``limiter.hit(id)`` / ``await limiter.ahit(id)``, ``peek`` / ``apeek``, ``reset`` /
    ``areset``: see :class:`~cachekit.ratelimit._core.LimiterCore` for keys and errors."""


def rate_limit(
    cache: Cache,
    rate: str | Rate | tuple[int, float],
    *,
    key: str | Callable[..., Any] | None = None,
    name: str | None = None,
    cost: int = 1,
    burst: int | None = None,
    algorithm: str = "gcra",
    on_error: str = "allow",
) -> Callable[[Callable[_P, _R]], Callable[_P, _R]]:
    """A decorator limiting calls of a function (sync or async) to ``rate``, per identity:
    ``key`` is a template over the arguments (``"{user_id}"``) or a callable taking them;
    without one every call shares one allowance. A refused call raises
    :class:`~cachekit.RateLimited` (its ``decision`` says when to retry) and the function
    does not run. ``name`` (default: the function's module and qualified name) names the
    limit: functions given the same name share it. The decorated function has
    ``.limiter``."""

    def decorate(func: Callable[_P, _R]) -> Callable[_P, _R]:
        limiter = RateLimiter(
            cache,
            name or f"{func.__module__}.{func.__qualname__}",
            rate,
            burst=burst,
            algorithm=algorithm,
            on_error=on_error,
        )
        limiter.rule.check_cost(cost)  # a cost that can never pass fails now
        # no key: every call shares one allowance
        identity: Callable[[tuple[Any, ...], dict[str, Any]], Any] = (
            _shared if key is None else KeyBuilder(func, key)
        )

        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def limited_async(*args: Any, **kwargs: Any) -> Any:
                decision = await limiter.ahit(identity(args, kwargs), cost)
                if not decision.allowed:
                    raise RateLimited(limiter.name, decision)
                return await func(*args, **kwargs)

            wrapper: Any = limited_async
        else:

            @functools.wraps(func)
            def limited(*args: Any, **kwargs: Any) -> Any:
                decision = limiter.hit(identity(args, kwargs), cost)
                if not decision.allowed:
                    raise RateLimited(limiter.name, decision)
                return func(*args, **kwargs)

            wrapper = limited
        wrapper.limiter = limiter
        return wrapper  # type: ignore[no-any-return]

    return decorate
