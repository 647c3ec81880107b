"""The ``@cached`` hit path on a store that keeps objects in this process: the one place.

On memory a hit costs less than a few Python function calls, so the frames matter. A
backend that offers ``reader()`` (:meth:`cachekit.backends.memory.MemoryBackend.reader`:
a lock-free ``read(key) -> stored value or MISSING`` that checks the expiry against the
store's clock and records the read for its eviction policy) gets it asked for once, by
the :class:`~cachekit.Cache` (``Cache._reader``), when its codec stores the objects
themselves; then here, once per decorated function, a wrapper is built that serves hits
with that read alone: the key (:meth:`KeyBuilder.full <cachekit.core.keys.KeyBuilder.full>`,
the same builder the general path uses, so a hit finds what a miss stored), one read, a
hit counted, an entry stored with metadata unwrapped (the wrappers: ``_async_fastpath.py``
and its generated sync twin). Anything else (a miss, an expired
entry) is handed to the general wrapper, unchanged, which reads again and counts the miss.

Chosen at decoration time (:func:`cachekit.decorator.decorate.decorate`), for a function with no
stampede options (``stale_ttl``, ``early_refresh``, ``lock`` and ``stale_if_error`` need
the entry's metadata: their own wrapper) and no ``key=`` callable (a miss builds its key
again in the general wrapper: the user's function is not called twice). ``cache.get`` and
the general wrappers read through the same reader (``Cache._lookup``).
"""

from __future__ import annotations

from collections.abc import Callable
from sys import intern
from typing import Any

from ._async_fastpath import (
    make_async_generation_hit_wrapper,
    make_async_hit_wrapper,
    make_async_one_argument_wrapper,
)
from ._sync_fastpath import (
    make_sync_generation_hit_wrapper,
    make_sync_hit_wrapper,
    make_sync_one_argument_wrapper,
)

__all__ = ["memory_hit_wrapper"]

_MEMO_SIZE = 1024
_NO_ARG: Any = object()  # "no positional argument given" (None is an argument)


def memory_hit_wrapper(
    cache: Any, plan: Any, general: Callable[..., Any], is_async: bool
) -> Callable[..., Any] | None:
    """A wrapper serving hits through the cache's reader and everything else through
    ``general``; or None when this function/cache pair does not qualify."""
    read: Callable[[str], Any] | None = cache._reader
    if read is None or plan.rules.hit is not None:
        return None  # no in-process store, or hits converted into the return type
    # (``rules.fresh``, a miss's value round-tripped as a hit returns it, is the general
    # wrapper's business: a decoding reader, the near cache's L1, returns the decoded hit)
    keys = plan.keys
    if keys.key_func is not None:
        return None  # the user's key function, called once per call: the general path
    full_key = plan.full_key
    counters = cache.counters
    if plan.generation.movable:  # a reader over Redis (near): keys follow the generation
        make_gen = (
            make_async_generation_hit_wrapper if is_async else make_sync_generation_hit_wrapper
        )
        return make_gen(read, full_key, plan.generation, counters, general)

    if keys.template is not None or not keys.simple or len(keys.names) != 1:
        make = make_async_hit_wrapper if is_async else make_sync_hit_wrapper
        return make(read, full_key, counters, general)

    # One parameter (get_user(user_id)), the common case. The argument is taken
    # positional-only (``arg`` may still be the parameter's name: a keyword lands in
    # ``kwargs``), which spares indexing ``args``. The keys of recent int and str arguments
    # are remembered, building one being ~40% of a hit. Only an exact int or str is looked
    # up (1, 1.0 and True are equal as dict keys but are keyed apart), and an int never
    # equals a str, so one memo serves both. A key depends only on the argument (the
    # namespace is fixed at construction), so a remembered one is never stale.
    memo: dict[int | str, str] = {}

    def key_of(arg: int | str) -> str:  # a memo miss
        # interned, as the memory store interns the keys it writes: a hit then finds its
        # entry by identity (~15% of a hit saved: no text comparison in the dict read and
        # the LRU touch)
        key: str = intern(full_key((arg,), {}))
        if len(memo) >= _MEMO_SIZE:
            memo.clear()
        memo[arg] = key
        return key

    make_one = make_async_one_argument_wrapper if is_async else make_sync_one_argument_wrapper
    return make_one(read, full_key, key_of, memo.get, _NO_ARG, counters, general)
