"""The ``@cached`` wrapper for coroutine functions.

GENERATED from ``cachekit/_async/decorator.py`` by
``scripts/unasync.py`` -- do not edit; edit the async source and run the script.
The wrapper is built once per decorated function; the hit path is a key, one lookup and
a return.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .._sentinel import MISSING
from .._stampede import StampedeOptions
from .stampede import SyncStampede

__all__ = ["make_sync_stampede_wrapper", "make_sync_wrapper"]


def make_sync_wrapper(
    cache: Any, func: Callable[..., Any], plan: Any
) -> tuple[Callable[..., Any], Callable[..., Any]]:
    """``(wrapper, refresh)`` for ``func`` under ``plan`` (a ``CachePlan``)."""
    full_key = plan.full_key
    lookup = cache._lookup
    store = cache._store
    should_store = plan.should_store
    ttl = plan.ttl
    tags = plan.tags

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        key = full_key(args, kwargs)
        value = lookup(key)
        if value is not MISSING:
            return value
        value = func(*args, **kwargs)
        if should_store(value):
            store(key, value, ttl, tags(args, kwargs))
        return value

    def refresh(*args: Any, **kwargs: Any) -> Any:
        """Call the function now and store its result, whatever is cached."""
        value = func(*args, **kwargs)
        if should_store(value):
            store(full_key(args, kwargs), value, ttl, tags(args, kwargs))
        return value

    return wrapper, refresh


def make_sync_stampede_wrapper(
    cache: Any, func: Callable[..., Any], plan: Any, options: StampedeOptions
) -> tuple[Callable[..., Any], Callable[..., Any]]:
    """The wrapper for functions decorated with stampede options (``lock``,
    ``early_refresh``, ``stale_ttl``, ``stale_if_error``): only they pay for them."""
    stampede = SyncStampede(cache, options, plan.should_store)
    full_key = plan.full_key
    ttl = plan.ttl
    tags = plan.tags
    get = stampede.get

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return get(full_key(args, kwargs), func, args, kwargs, ttl, tags)

    def refresh(*args: Any, **kwargs: Any) -> Any:
        """Call the function now and store its result, whatever is cached."""
        value, delta = stampede._timed(func, args, kwargs)
        if plan.should_store(value):
            stampede._store(full_key(args, kwargs), value, delta, ttl, tags(args, kwargs))
        return value

    return wrapper, refresh
