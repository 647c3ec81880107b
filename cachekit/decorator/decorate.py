"""``@cached``: what is decided once, at decoration time.

The function is inspected once (sync or coroutine, signature, key template); the sync or
async wrapper is then built specialised for it (:mod:`cachekit.decorator._sync_decorator`,
:mod:`cachekit.decorator._async_decorator`). Plain closures rather than ``wrapt`` proxies: measured
here, a wrapt ``FunctionWrapper`` adds ~400 ns to every call, about as much as a whole
cachetools hit; methods bind through the ordinary descriptor protocol, and classmethod /
staticmethod objects are unwrapped and re-wrapped.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from ..core.keys import KeyBuilder
from ..core.policy import DEFAULT
from ..core.typed import ResultRules
from ..exceptions import ConfigurationError
from ..stampede.rules import StampedeOptions
from ._async_decorator import make_async_stampede_wrapper, make_async_wrapper
from ._sync_decorator import make_sync_stampede_wrapper, make_sync_wrapper
from .fastpath import memory_hit_wrapper
from .names import claim

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from .._cache import Cache
    from .types import StampedeKeywords

__all__ = ["CachePlan", "decorate"]

F = TypeVar("F", bound=Callable[..., Any])


def _store_all(value: Any) -> bool:
    return True


_NO_TAGS: Callable[[tuple[Any, ...], Mapping[str, Any]], tuple[str, ...]] = lambda a, k: ()


class CachePlan:
    """Everything about one decorated function that does not change between calls."""

    def __init__(
        self,
        cache: Cache,
        func: Callable[..., Any],
        *,
        ttl: Any,
        key: str | Callable[..., Any] | None,
        name: str | None = None,
        tags: Iterable[str] | Callable[..., Iterable[str]] | None,
        cache_none: bool,
        condition: Callable[[Any], bool] | None,
        unless: Callable[[Any], bool] | None,
    ) -> None:
        self.ttl = ttl  # (a bad one fails now, at decoration, not on the first miss: below)
        self.keys = KeyBuilder(func, key, name)
        if key is None and name is None:  # the default key names the function: is it its own?
            claim(cache, self.keys.func_name, func)
        # the entries' namespace moves with the generation on Redis (cachekit.core.generation):
        # then the key is built in the namespace known at each call; memory's never moves
        self.generation = cache._generation
        self.full_key = self.keys.full(self.generation if self.generation.movable else cache._ns)
        self.tags = self._tag_builder(tags)
        self.should_store = self._store_rule(cache_none, condition, unless)
        # what hits and misses return on a bytes-storing cache (decided now, not per call)
        self.rules = ResultRules(cache, func)
        faithful = self.rules.faithful
        if faithful is not None:  # a value whose hit would differ is not stored
            wanted = self.should_store
            self.should_store = lambda value: wanted(value) and faithful(value)
        # the common case, tested inline by the wrappers (a call less on every miss): every
        # result is stored, with no tags; and the entries' lifetime, resolved once
        self.stores_all = self.should_store is _store_all
        self.tagged = self.tags is not _NO_TAGS
        self.seconds = cache._seconds(ttl)

    @staticmethod
    def _store_rule(
        cache_none: bool,
        condition: Callable[[Any], bool] | None,
        unless: Callable[[Any], bool] | None,
    ) -> Callable[[Any], bool]:
        if cache_none and condition is None and unless is None:
            return _store_all

        def should_store(value: Any) -> bool:
            if value is None and not cache_none:
                return False
            if condition is not None and not condition(value):
                return False
            return unless is None or not unless(value)

        return should_store

    def _tag_builder(
        self, tags: Iterable[str] | Callable[..., Iterable[str]] | None
    ) -> Callable[[tuple[Any, ...], Mapping[str, Any]], Iterable[str]]:
        if not tags:
            return _NO_TAGS
        if callable(tags):
            tag_func = tags
            return lambda args, kwargs: tuple(tag_func(*args, **kwargs))
        if isinstance(tags, str):
            raise ConfigurationError("tags must be an iterable of strings, e.g. tags=('users',)")
        fixed = tuple(tags)
        if not any("{" in tag for tag in fixed):
            return lambda args, kwargs: fixed
        keys = self.keys

        def formatted(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> tuple[str, ...]:
            values = keys.values(args, kwargs)
            named = dict(zip(keys.names, values))
            return tuple(tag.format(*values, **named) for tag in fixed)

        return formatted


def decorate(
    cache: Cache,
    func: F,
    *,
    ttl: Any = DEFAULT,
    key: str | Callable[..., Any] | None = None,
    name: str | None = None,
    tags: Iterable[str] | Callable[..., Iterable[str]] | None = None,
    cache_none: bool = True,
    condition: Callable[[Any], bool] | None = None,
    unless: Callable[[Any], bool] | None = None,
    **stampede_options: Unpack[StampedeKeywords],
) -> F:
    """``@cache.cached(...)``: the entry's options here (the defaults of
    :class:`~cachekit.decorator.types.CachedOptions`), the stampede's passed on to
    :meth:`StampedeOptions.build <cachekit.stampede.rules.StampedeOptions.build>`, which
    holds their defaults and checks (an unknown name is a ``TypeError`` there)."""
    options = dict(
        ttl=ttl, key=key, name=name, tags=tags, cache_none=cache_none, condition=condition,
        unless=unless,
    )  # fmt: skip
    stampede = StampedeOptions.build(**stampede_options, ttl=cache._seconds(ttl) or None)
    if stampede.active:  # the heavier wrapper only for functions that asked for it
        options["stampede"] = stampede
    return _decorate(cache, func, **options)


def _decorate(cache: Cache, func: F, stampede: StampedeOptions | None = None, **options: Any) -> F:
    if isinstance(func, (classmethod, staticmethod)):
        inner = _decorate(cache, func.__func__, stampede, **options)
        return type(func)(inner)
    if not callable(func):
        raise TypeError(f"@cached decorates functions, not {type(func).__qualname__}")
    plan = CachePlan(cache, func, **options)
    full_key = plan.full_key
    if stampede is not None:
        make = (
            make_async_stampede_wrapper
            if inspect.iscoroutinefunction(func)
            else make_sync_stampede_wrapper
        )
        wrapper, refresh = make(cache, func, plan, stampede)
    elif inspect.iscoroutinefunction(func):
        wrapper, refresh = make_async_wrapper(cache, func, plan)
    else:
        wrapper, refresh = make_sync_wrapper(cache, func, plan)
    if stampede is None:  # hits from an in-process store's reader; the rest as above
        is_async = inspect.iscoroutinefunction(func)
        wrapper = memory_hit_wrapper(cache, plan, wrapper, is_async) or wrapper

    def key_of(*args: Any, **kwargs: Any) -> str:
        """The key this call's result is cached under (use it with ``cache.get``)."""
        return cache._space().strip(full_key(args, kwargs))

    def invalidate(*args: Any, **kwargs: Any) -> bool:
        """Drop the entry this call would use; True if there was one. A load of it in
        flight does not store what it read before (see :mod:`cachekit.leases.rules`)."""
        cache._space()
        return bool(cache._revoke([full_key(args, kwargs)]))

    async def ainvalidate(*args: Any, **kwargs: Any) -> bool:
        await cache._aspace()
        return bool(await cache._arevoke([full_key(args, kwargs)]))

    functools.update_wrapper(wrapper, func)
    wrapper.__signature__ = inspect.signature(func)  # type: ignore[attr-defined]
    wrapper.key = key_of  # type: ignore[attr-defined]
    wrapper.invalidate = invalidate  # type: ignore[attr-defined]
    wrapper.ainvalidate = ainvalidate  # type: ignore[attr-defined]
    wrapper.refresh = refresh  # type: ignore[attr-defined]
    wrapper.arefresh = refresh  # type: ignore[attr-defined]
    wrapper.cache = cache  # type: ignore[attr-defined]
    return wrapper  # type: ignore[return-value]
