"""The ``@cached`` hit path on the embedded memory backend, in one Python frame.

On memory a hit costs less than a Python function call, so the frames matter: the
general wrapper calls a key builder, then a lookup, then the backend. Here the key of a
positional call (no keywords; trailing defaults may be left out) and the dict read are
inlined into the wrapper itself; every other case (keywords, a miss, an expired entry, an
entry carrying metadata) is handed to the general wrapper, unchanged. Chosen at
decoration time, only for a memory backend that stores objects and a default
(signature-derived) key.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ._codec import Boxed
from ._keys import MAX_KEY_LENGTH

__all__ = ["memory_hit_wrapper"]

_MEMO_SIZE = 1024


def memory_hit_wrapper(
    cache: Any, keys: Any, general: Callable[..., Any], is_async: bool
) -> Callable[..., Any] | None:
    """A wrapper serving hits inline and everything else through ``general``; or None
    when this function/cache pair does not qualify."""
    from .backends.memory import MemoryBackend

    backend = cache.__dict__.get("_backend")
    if not isinstance(backend, MemoryBackend) or not cache._codec.stores_objects:
        return None
    if keys.key_func is not None or keys.template is not None or not keys.simple:
        return None
    base = cache.namespace.text + keys.base
    tails = keys._tails  # calls leaving out trailing defaults: what to append
    limit = MAX_KEY_LENGTH + len(cache.namespace.text)
    data_get = backend._data.get
    touch = backend._data.move_to_end
    clock = backend._clock
    counters = cache.counters
    encode = keys.text  # the injective argument text (orjson's own for str/int/...)

    if is_async:

        async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
            tail = None if kwargs else tails.get(len(args))
            if tail is not None:
                values = args + tail if tail else args
                key = base + encode(values)
                entry = data_get(key)
                if entry is not None and entry[1] > clock():
                    value = entry[0]
                    if type(value) is not Boxed:
                        try:
                            touch(key)
                        except KeyError:  # removed since the read: still a hit
                            pass
                        counters.hits += 1
                        return value
            return await general(*args, **kwargs)

        return async_wrapper

    if len(keys.names) == 1:
        # One parameter (get_user(user_id)): remember the key of recent int/str arguments,
        # the JSON encoding being ~40% of a hit. The exact type picks the memo, so 1, 1.0
        # and True, equal as dict keys, never share a key string.
        int_keys: dict[int, str] = {}
        str_keys: dict[str, str] = {}

        def one_argument_wrapper(*args: Any, **kwargs: Any) -> Any:
            if not kwargs and len(args) == 1:
                arg = args[0]
                kind = type(arg)
                memo: dict[Any, str] | None = (
                    int_keys if kind is int else str_keys if kind is str else None
                )
                if memo is not None:
                    key = memo.get(arg)
                    if key is None:
                        key = base + encode(args)
                        if len(memo) >= _MEMO_SIZE:
                            memo.clear()
                        if len(key) <= limit:
                            memo[arg] = key
                    entry = data_get(key)
                    if entry is not None and entry[1] > clock():
                        value = entry[0]
                        if type(value) is not Boxed:
                            try:
                                touch(key)
                            except KeyError:  # removed since the read: still a hit
                                pass
                            counters.hits += 1
                            return value
            return general(*args, **kwargs)

        return one_argument_wrapper

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        tail = None if kwargs else tails.get(len(args))
        if tail is not None:
            values = args + tail if tail else args
            key = base + encode(values)
            entry = data_get(key)
            if entry is not None and entry[1] > clock():
                value = entry[0]
                if type(value) is not Boxed:
                    try:
                        touch(key)
                    except KeyError:  # removed since the read: still a hit
                        pass
                    counters.hits += 1
                    return value
        return general(*args, **kwargs)

    return wrapper
