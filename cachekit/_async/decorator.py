"""The ``@cached`` wrapper for coroutine functions.

This file is the source: ``cachekit/_sync/decorator.py`` is generated from it by
``scripts/unasync.py`` (CI fails when they drift). Edit here, then run the script.
The wrapper is built once per decorated function; the hit path is a key, one lookup and
a return.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .._sentinel import MISSING
from .._stampede import StampedeOptions
from .stampede import AsyncStampede

__all__ = ["make_async_stampede_wrapper", "make_async_wrapper"]


def make_async_wrapper(
    cache: Any, func: Callable[..., Any], plan: Any
) -> tuple[Callable[..., Any], Callable[..., Any]]:
    """``(wrapper, arefresh)`` for ``func`` under ``plan`` (a ``CachePlan``)."""
    full_key = plan.full_key
    lookup = cache._alookup
    store = cache._astore
    should_store = plan.should_store
    ttl = plan.ttl
    tags = plan.tags

    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        key = full_key(args, kwargs)
        value = await lookup(key)
        if value is not MISSING:
            return value
        value = await func(*args, **kwargs)
        if should_store(value):
            await store(key, value, ttl, tags(args, kwargs))
        return value

    async def arefresh(*args: Any, **kwargs: Any) -> Any:
        """Call the function now and store its result, whatever is cached."""
        value = await func(*args, **kwargs)
        if should_store(value):
            await store(full_key(args, kwargs), value, ttl, tags(args, kwargs))
        return value

    return wrapper, arefresh


def make_async_stampede_wrapper(
    cache: Any, func: Callable[..., Any], plan: Any, options: StampedeOptions
) -> tuple[Callable[..., Any], Callable[..., Any]]:
    """The wrapper for functions decorated with stampede options (``lock``,
    ``early_refresh``, ``stale_ttl``, ``stale_if_error``): only they pay for them."""
    stampede = AsyncStampede(cache, options, plan.should_store)
    full_key = plan.full_key
    ttl = plan.ttl
    tags = plan.tags
    get = stampede.aget

    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        return await get(full_key(args, kwargs), func, args, kwargs, ttl, tags)

    async def arefresh(*args: Any, **kwargs: Any) -> Any:
        """Call the function now and store its result, whatever is cached."""
        value, delta = await stampede._atimed(func, args, kwargs)
        if plan.should_store(value):
            await stampede._astore(full_key(args, kwargs), value, delta, ttl, tags(args, kwargs))
        return value

    return wrapper, arefresh
