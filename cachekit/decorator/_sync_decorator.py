"""The ``@cached`` wrapper for coroutine functions.

GENERATED from ``cachekit/decorator/_async_decorator.py`` by
``scripts/unasync.py`` -- do not edit; edit the async source and run the script.
The wrapper is built once per decorated function; the hit path is a key, one lookup and
a return (plus, for a bytes-storing cache and a function annotated with a type JSON cannot
say, a decode into that type: see :mod:`cachekit.core.typed`).
"""

from __future__ import annotations

from collections.abc import Callable
from time import monotonic
from typing import Any

from ..core.sentinel import MISSING
from ..leases.rules import Lease
from ..stampede._sync_stampede import Stampede
from ..stampede.rules import StampedeOptions
from .computed import NotStored, is_stored, not_stored, quiet_unencodable, stored, unwrap

__all__ = ["make_sync_stampede_wrapper", "make_sync_wrapper"]


def make_sync_wrapper(
    cache: Any, func: Callable[..., Any], plan: Any
) -> tuple[Callable[..., Any], Callable[..., Any]]:
    """``(wrapper, refresh)`` for ``func`` under ``plan`` (a ``CachePlan``)."""
    full_key = plan.full_key
    # a generation that can move (Redis) is re-read when its poll interval has passed,
    # before the key is built in its namespace (cachekit.core.generation)
    generation = plan.generation
    movable, clock, space = generation.movable, generation.clock, cache._space
    lookup = cache._lookup
    revoke = cache._revoke
    store = cache._store
    store_load = cache._store_load
    should_store, stores_all = plan.should_store, plan.stores_all
    ttl, seconds = plan.ttl, plan.seconds
    tags, tagged = plan.tags, plan.tagged
    rules = plan.rules  # what hits and misses return: see cachekit.core.typed
    hit, fresh, unencodable, mismatch = rules.hit, rules.fresh, rules.unencodable, rules.mismatch
    fresh_stored = rules.fresh_stored  # fresh, from the entry just encoded (one encode)

    def refresh(*args: Any, **kwargs: Any) -> Any:
        """Call the function now and store its result, whatever is cached."""
        value = func(*args, **kwargs)
        if should_store(value):
            space()
            store(full_key(args, kwargs), value, ttl, tags(args, kwargs), unencodable)
            if fresh is not None:
                value = fresh(value)
        return value

    if hit is None and fresh is None:  # objects stored as they are: nothing to convert

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if movable and clock() >= generation.valid_until:
                space()
            key = full_key(args, kwargs)
            value = lookup(key)
            if value is not MISSING:
                return value
            lease = Lease(monotonic())  # Lease.now(), a frame less: see cachekit.leases.rules
            value = func(*args, **kwargs)
            if stores_all or should_store(value):
                names = tags(args, kwargs) if tagged else ()
                store(key, value, ttl, names, unencodable, lease=lease)
            return value

        return wrapper, refresh

    def converting_wrapper(*args: Any, **kwargs: Any) -> Any:
        if movable and clock() >= generation.valid_until:
            space()
        key = full_key(args, kwargs)
        value = lookup(key)
        if value is not MISSING:
            if hit is None:  # the plain JSON hit: as fast as it always was
                return value
            try:
                return hit(value)
            except Exception as exc:  # does not fit the annotation: recompute, replace
                mismatch(key, exc)
                revoke([key])  # (so that this load's store may replace it)
        lease = Lease(monotonic())  # Lease.now(), a frame less: see cachekit.leases.rules
        value = func(*args, **kwargs)
        if stores_all or should_store(value):
            names = tags(args, kwargs) if tagged else ()
            if fresh_stored is None:
                store(key, value, ttl, names, unencodable, lease=lease)
            else:  # what a hit will return: the serializer's round trip of the entry
                value = store_load(
                    key, value, seconds, names, unencodable, lease, fresh_stored
                )
        return value

    return converting_wrapper, refresh


def _round_tripping(
    func: Callable[..., Any], fresh: Callable[[Any], Any], should_store: Callable[[Any], bool]
) -> Callable[..., Any]:
    """``func`` whose stored results come back as a hit will return them: the value a miss
    returns (to its caller and to every caller that waited for it) is the cached one."""

    def compute(*args: Any, **kwargs: Any) -> Any:
        value = func(*args, **kwargs)
        return fresh(value) if should_store(value) else value

    return compute


def _marking(
    func: Callable[..., Any],
    fresh: Callable[[Any], Any] | None,
    should_store: Callable[[Any], bool],
) -> Callable[..., Any]:
    """``func`` for a stampede whose hits are decoded into the annotation: a result that is
    not stored comes back as a NotStored (returned as it is, never decoded), a stored one
    as a hit will return it (see :mod:`cachekit.decorator.computed`)."""

    def compute(*args: Any, **kwargs: Any) -> Any:
        value = func(*args, **kwargs)
        if not should_store(value):
            return not_stored(value)
        return stored(value if fresh is None else fresh(value))

    return compute


def make_sync_stampede_wrapper(
    cache: Any, func: Callable[..., Any], plan: Any, options: StampedeOptions
) -> tuple[Callable[..., Any], Callable[..., Any]]:
    """The wrapper for functions decorated with stampede options (``lock``,
    ``early_refresh``, ``stale_ttl``, ``stale_if_error``): only they pay for them."""
    rules = plan.rules
    hit, fresh, mismatch = rules.hit, rules.fresh, rules.mismatch
    full_key = plan.full_key
    generation = plan.generation  # see make_sync_wrapper
    movable, clock, space = generation.movable, generation.clock, cache._space
    ttl = plan.ttl
    tags = plan.tags
    should_store = plan.should_store
    if hit is None:  # what the stampede returns is what the caller gets
        stampede = Stampede(cache, options, should_store)
        stampede.unencodable = rules.unencodable
        compute = func if fresh is None else _round_tripping(func, fresh, should_store)
    else:  # hits are decoded: computed values must be told from them
        stampede = Stampede(cache, options, is_stored)
        stampede.unencodable = quiet_unencodable(rules.unencodable)
        compute = _marking(func, fresh, should_store)
    get = stampede.get

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if movable and clock() >= generation.valid_until:
            space()
        key = full_key(args, kwargs)
        value = get(key, compute, args, kwargs, ttl, tags)
        if hit is None:
            return value
        if type(value) is NotStored:  # computed and not stored: the function's own result
            return unwrap(value)
        # cached, stale, or computed and stored (faithful: its hit is equal), decoded into
        # the annotation; a value that does not fit is returned as it is
        try:
            return hit(value)
        except Exception as exc:
            mismatch(key, exc)
            return value

    def refresh(*args: Any, **kwargs: Any) -> Any:
        """Call the function now and store its result, whatever is cached."""
        value, delta = stampede._timed(compute, args, kwargs)
        if type(value) is NotStored:
            return unwrap(value)
        if stampede.should_store(value):
            space()
            stampede._store(full_key(args, kwargs), value, delta, ttl, tags(args, kwargs))
        return value

    return wrapper, refresh
