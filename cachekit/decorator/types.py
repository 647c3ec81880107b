"""What ``@cached`` returns, for type checkers: the function's own signature plus helpers.

    @cache.cached(ttl=60)
    def get_user(user_id: int) -> User: ...

    get_user(1)               # User
    get_user.invalidate(1)    # bool, arguments checked against get_user's
    get_user.key(1)           # str

On a method, instance access gives back a callable with the method's return type (the
helpers are reached through the class: ``Repo.find.invalidate(repo, 1)``). A
staticmethod keeps its type. A cached classmethod works at run time in either decorator
order, but mypy binds ``cls`` only for plain functions, not callable objects, so calls to
it are not checked (write ``typing.cast`` or ``# type: ignore[call-arg]`` there).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, ParamSpec, Protocol, TypedDict, TypeVar, overload

__all__ = ["CachedDecorator", "CachedFunction", "CachedOptions", "StampedeKeywords"]

P = ParamSpec("P")
R = TypeVar("R")
R_co = TypeVar("R_co", covariant=True)
T = TypeVar("T")


class StampedeKeywords(TypedDict, total=False):
    """The stampede keyword arguments of ``@cached`` and ``get_or_set``, typed once
    (``**options: Unpack[StampedeKeywords]`` where a signature passes them on). Their
    defaults and checks live in one place, :meth:`StampedeOptions.build
    <cachekit.stampede.rules.StampedeOptions.build>` (tests/decorator/test_options.py
    holds the two together).

    ``lock``: compute a missing key once (threads, tasks, and processes on Redis);
    ``lock_ttl``: seconds bounding a crashed holder; ``lock_timeout``: seconds after which
    waiters compute themselves; ``early_refresh``: refresh in the background before expiry
    (True, or an XFetch beta >= 0); ``stale_ttl``: seconds the expired value is served
    while one background refresh runs; ``stale_if_error``: serve the expired value when
    the function raises (True, or seconds).
    """

    lock: bool
    lock_ttl: float
    lock_timeout: float | None
    early_refresh: bool | float
    stale_ttl: float | None
    stale_if_error: bool | float


class CachedOptions(StampedeKeywords, total=False):
    """Every keyword argument of ``@cache.cached(...)`` / ``@cached(...)``: the stampede
    ones and those of the entry, whose defaults are :func:`cachekit.decorator.decorate.decorate`'s
    (``ttl``: the cache's ``default_ttl``)."""

    ttl: Any  # seconds (float), a timedelta, or None for no expiry
    key: str | Callable[..., Any] | None
    name: str | None
    tags: Iterable[str] | Callable[..., Iterable[str]] | None
    cache_none: bool
    condition: Callable[[Any], bool] | None
    unless: Callable[[Any], bool] | None


class CachedFunction(Protocol[P, R_co]):
    @property
    def __wrapped__(self) -> Callable[P, R_co]: ...

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R_co: ...

    def key(self, *args: P.args, **kwargs: P.kwargs) -> str:
        """The key this call's result is cached under (use it with ``cache.get``)."""
        ...

    def invalidate(self, *args: P.args, **kwargs: P.kwargs) -> bool:
        """Drop the entry this call would use; True if there was one."""
        ...

    async def ainvalidate(self, *args: P.args, **kwargs: P.kwargs) -> bool: ...

    def refresh(self, *args: P.args, **kwargs: P.kwargs) -> R_co:
        """Call the function now and store its result (awaitable for ``async def``)."""
        ...

    def arefresh(self, *args: P.args, **kwargs: P.kwargs) -> R_co: ...

    @overload
    def __get__(self, instance: None, owner: type[Any]) -> CachedFunction[P, R_co]: ...

    @overload
    def __get__(self, instance: object, owner: type[Any] | None = None) -> Callable[..., R_co]: ...


class CachedDecorator(Protocol):
    """``cache.cached(...)`` with options: a decorator that keeps the function's type."""

    @overload
    def __call__(self, func: classmethod[T, P, R], /) -> classmethod[T, P, R]: ...

    @overload
    def __call__(  # type: ignore[overload-overlap]  # a staticmethod is callable too
        self, func: staticmethod[P, R], /
    ) -> staticmethod[P, R]: ...

    @overload
    def __call__(self, func: Callable[P, R], /) -> CachedFunction[P, R]: ...
