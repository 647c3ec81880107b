"""The memory hit wrappers of :mod:`cachekit.decorator.fastpath`, for async functions.

This file is the source: ``cachekit/decorator/_sync_fastpath.py`` is generated from it by
``scripts/unasync.py`` (CI fails when they drift). Edit here, then run the script.
Which wrapper a function gets, and the key memo, are decided in ``fastpath.py``; here only
the calls, so every name a hit reads is a local of the closure.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..core.codec import Boxed
from ..core.sentinel import MISSING

__all__ = [
    "make_async_generation_hit_wrapper",
    "make_async_hit_wrapper",
    "make_async_one_argument_wrapper",
]


def make_async_hit_wrapper(
    read: Callable[[str], Any],
    full_key: Callable[[tuple[Any, ...], dict[str, Any]], str],
    counters: Any,
    general: Callable[..., Any],
) -> Callable[..., Any]:
    """Any signature: the key built from the call, one read."""
    missing, boxed = MISSING, Boxed

    async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
        value = read(full_key(args, kwargs))
        if value is not missing:
            counters.hits += 1
            return value.value if type(value) is boxed else value
        return await general(*args, **kwargs)

    return async_wrapper


def make_async_one_argument_wrapper(
    read: Callable[[str], Any],
    full_key: Callable[[tuple[Any, ...], dict[str, Any]], str],
    key_of: Callable[[int | str], str],
    memo_get: Callable[[int | str], str | None],
    no_arg: Any,
    counters: Any,
    general: Callable[..., Any],
) -> Callable[..., Any]:
    """One parameter: an exact int or str argument's key from the memo (see fastpath.py)."""
    missing, boxed = MISSING, Boxed

    async def async_one_argument_wrapper(arg: Any = no_arg, /, *args: Any, **kwargs: Any) -> Any:
        kind = type(arg)
        if (kind is int or kind is str) and not args and not kwargs:
            value = read(memo_get(arg) or key_of(arg))
            if value is not missing:
                counters.hits += 1
                return value.value if type(value) is boxed else value
            return await general(arg)
        if arg is not no_arg:
            args = (arg, *args)
        value = read(full_key(args, kwargs))
        if value is not missing:
            counters.hits += 1
            return value.value if type(value) is boxed else value
        return await general(*args, **kwargs)

    return async_one_argument_wrapper


def make_async_generation_hit_wrapper(
    read: Callable[[str], Any],
    full_key: Callable[[tuple[Any, ...], dict[str, Any]], str],
    generation: Any,
    counters: Any,
    general: Callable[..., Any],
) -> Callable[..., Any]:
    """A reader in front of a backend whose generation can move (the near cache's L1): a
    hit only while the generation known is to be trusted; past its poll interval, the
    general wrapper (which re-reads it). ``full_key`` follows the generation."""
    missing, boxed, clock = MISSING, Boxed, generation.clock

    async def async_generation_wrapper(*args: Any, **kwargs: Any) -> Any:
        if clock() < generation.valid_until:
            value = read(full_key(args, kwargs))
            if value is not missing:
                counters.hits += 1
                return value.value if type(value) is boxed else value
        return await general(*args, **kwargs)

    return async_generation_wrapper
