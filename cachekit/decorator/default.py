"""The module-level ``cached``: bound to a default cache (memory, or ``CACHEKIT_URL``)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, overload

from .._cache import Cache
from .types import CachedDecorator, CachedFunction

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from .types import CachedOptions

__all__ = ["cached", "get_default_cache", "set_default_cache"]

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")

_default: Cache | None = None
_lock = threading.Lock()


def get_default_cache() -> Cache:
    """The process-wide default cache, made on first use by :meth:`Cache.from_env`."""
    global _default
    if _default is None:
        with _lock:
            if _default is None:
                _default = Cache.from_env()
    return _default


def set_default_cache(cache: Cache | None) -> None:
    """Replace the default cache (functions decorated afterwards use the new one)."""
    global _default
    with _lock:
        _default = cache


@overload
def cached(func: classmethod[T, P, R], /) -> classmethod[T, P, R]: ...


@overload
def cached(  # type: ignore[overload-overlap]  # a staticmethod is callable too
    func: staticmethod[P, R], /
) -> staticmethod[P, R]: ...


@overload
def cached(func: Callable[P, R], /) -> CachedFunction[P, R]: ...


@overload
def cached(func: None = None, /, **options: Unpack[CachedOptions]) -> CachedDecorator: ...


def cached(func: Any = None, /, **options: Any) -> Any:
    """``@cached`` / ``@cached(ttl=60, key=...)`` on the default cache; see
    :meth:`Cache.cached` for the options."""
    decorate: Callable[..., Any] = get_default_cache().cached
    if func is not None:
        return decorate(func, **options)
    return decorate(**options)
