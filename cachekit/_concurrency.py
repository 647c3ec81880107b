"""What genuinely differs between threads and event loops, written once, by hand.

The generated sync code calls the names without the ``a`` prefix; the async sources call
the ``a`` names. Nothing else in cachekit knows which world it runs in.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

__all__ = ["_aresolve", "_resolve"]


def _resolve(func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    return func(*args, **kwargs)


async def _aresolve(func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call a sync or async callable from async code."""
    result = func(*args, **kwargs)
    if inspect.isawaitable(result):
        result = await result
    return result
