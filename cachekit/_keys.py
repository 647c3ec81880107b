"""Key building: namespaces, user keys, and the keys ``@cached`` derives from a call.

All of this is pure: no backend, no clock.
"""

from __future__ import annotations

import hashlib
import inspect
import re
import string
import uuid
from collections.abc import Callable, Mapping
from datetime import date, datetime, time
from decimal import Decimal
from typing import Any

import orjson

from .exceptions import ConfigurationError, InvalidKeyError

__all__ = [
    "MAX_KEY_LENGTH",
    "KeyBuilder",
    "Namespace",
    "escape_glob",
    "internal_head",
    "normalize_key",
]

MAX_KEY_LENGTH = 200
"""Keys longer than this are shortened to a readable head plus a BLAKE2b digest."""

_SCALARS = (int, float, Decimal, uuid.UUID, datetime, date, time)


def _shorten(key: str) -> str:
    digest = hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()
    return f"{key[:64]}…#{digest}"


def normalize_key(key: Any) -> str:
    """The string form of a user key: str as is, numbers/UUIDs/dates/bytes/tuples converted.

    Redis keys are binary-safe, so spaces, newlines and unicode are kept; keys longer than
    :data:`MAX_KEY_LENGTH` are hashed. Anything else is an :class:`InvalidKeyError`.
    """
    if type(key) is str:
        return key if len(key) <= MAX_KEY_LENGTH else _shorten(key)
    if isinstance(key, str):
        text = str.__str__(key)
    elif isinstance(key, bool):
        text = "true" if key else "false"
    elif isinstance(key, _SCALARS):
        text = key.isoformat() if isinstance(key, (datetime, date, time)) else str(key)
    elif isinstance(key, (bytes, bytearray, memoryview)):
        text = bytes(key).decode("utf-8", "backslashreplace")
    elif isinstance(key, (tuple, list)):
        text = ":".join(normalize_key(part) for part in key)
    else:
        raise InvalidKeyError(
            f"cache keys are str, numbers, UUIDs, dates, bytes or tuples of those; "
            f"got {type(key).__qualname__}"
        )
    return text if len(text) <= MAX_KEY_LENGTH else _shorten(text)


def escape_glob(text: str) -> str:
    """Escape Redis glob metacharacters so ``text`` matches only itself in SCAN MATCH."""
    return re.sub(r"([\\*?\[\]])", r"\\\1", text)


class Namespace:
    """``{prefix}:{version}:`` in front of every key of one cache."""

    __slots__ = ("pattern_prefix", "prefix", "text", "version")

    def __init__(self, prefix: str, version: int | str = 1) -> None:
        if not isinstance(prefix, str) or not prefix:
            raise ConfigurationError("prefix must be a non-empty string")
        if prefix.startswith(INTERNAL_MARK):  # its namespace would cover another's internals
            raise ConfigurationError(
                f"prefix must not start with {INTERNAL_MARK!r} (reserved for cachekit's own keys)"
            )
        self.prefix = prefix
        self.version = version
        # version "" is an unversioned namespace, "{prefix}:" (the Django adapter's: Django
        # puts its own version in every key)
        self.text = f"{prefix}:{version}:" if version != "" else f"{prefix}:"
        self.pattern_prefix = escape_glob(self.text)

    def key(self, key: Any) -> str:
        return self.text + normalize_key(key)

    def pattern(self, pattern: str) -> str:
        return self.pattern_prefix + pattern

    def strip(self, full_key: str) -> str:
        return full_key[len(self.text) :]

    def internal(self, kind: str) -> str:
        """The head of cachekit's own keys of ``kind`` (see :func:`internal_head`)."""
        return internal_head(self.text, kind)


INTERNAL_MARK = "#"


def internal_head(ns_text: str, kind: str) -> str:
    """``#{prefix}:{version}:{kind}:``, the head of cachekit's bookkeeping keys of a namespace.

    The one definition of where internal keys live: tag sets (``tag``), locks and stampede
    wake-up lists (``lock``, ``done:<token>``), write-behind streams and dead letters
    (``wb``). The leading mark puts them outside every pattern over the namespace
    (``{prefix}:{version}:*``, and ``{prefix}:*`` for an unversioned one), so ``clear()``
    and ``delete_pattern()`` never reach them by accident: what ``clear()`` does to them is
    decided explicitly (tag sets go with their entries; locks and queued writes stay).
    """
    return f"{INTERNAL_MARK}{ns_text}{kind}:"


def _key_default(obj: Any) -> Any:
    """How orjson encodes argument types it does not know, for default keys."""
    if isinstance(obj, type):
        return f"<{obj.__module__}.{obj.__qualname__}>"
    custom = getattr(type(obj), "__cache_key__", None)
    if custom is not None:
        return custom(obj)
    if isinstance(obj, (set, frozenset)):
        return sorted(obj, key=repr)
    if isinstance(obj, (bytes, bytearray, memoryview)):
        return "b:" + bytes(obj).hex()
    if isinstance(obj, (Decimal, complex)):
        return repr(obj)
    repr_impl: Any = type(obj).__repr__
    if repr_impl is not object.__repr__:
        return f"{type(obj).__qualname__}:{obj!r}"
    # No value-based identity: key on the object itself (valid for this process only).
    # Define __cache_key__ or pass key= to share such entries between processes.
    return f"{type(obj).__qualname__}@{id(obj):x}"


_KEY_OPTIONS = orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS


def encode_arguments(values: Any) -> str:
    return orjson.dumps(values, default=_key_default, option=_KEY_OPTIONS).decode()


_SIMPLE_KINDS = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)


class KeyBuilder:
    """Turns a call ``f(*args, **kwargs)`` into the entry's key, once per decorated function.

    The arguments are normalised through the signature with defaults applied, so
    ``f(1, b=2)``, ``f(a=1, b=2)`` and ``f(1)`` (when ``b=2`` is the default) share a key.
    ``key`` may be a template over the bound arguments (``"user:{user_id}"``,
    ``"{user.id}"``) or a callable taking the function's arguments and returning a key.
    """

    def __init__(
        self, func: Callable[..., Any], key: str | Callable[..., Any] | None = None
    ) -> None:
        self.signature = sig = inspect.signature(func)
        params = list(sig.parameters.values())
        self.names = tuple(p.name for p in params)
        self.simple = all(p.kind in _SIMPLE_KINDS for p in params)
        self._keywords_ok = self.simple and not any(
            p.kind is inspect.Parameter.POSITIONAL_ONLY for p in params
        )
        self._defaults = tuple(p.default for p in params)  # inspect.Parameter.empty if none
        defaults = [p.default for p in params if p.default is not inspect.Parameter.empty]
        # for a call giving n positional arguments and no keywords: the defaults to append
        self._tails = {
            len(params) - missing: tuple(defaults[len(defaults) - missing :])
            for missing in range(len(defaults) + 1)
        }
        self.base = f"{func.__module__}.{func.__qualname__}:"
        self.template: str | None = None
        self.key_func: Callable[..., Any] | None = None
        if isinstance(key, str):
            self.template = key
            self._check_template(key)
        elif callable(key):
            self.key_func = key
        elif key is not None:
            raise ConfigurationError(f"key must be a template string or a callable, not {key!r}")

    def _check_template(self, template: str) -> None:
        for _, field, _, _ in string.Formatter().parse(template):
            if field is None:
                continue
            root = re.split(r"[.\[]", field, maxsplit=1)[0]
            if root == "" or root.isdigit():
                if not self.simple:
                    raise ConfigurationError(
                        f"positional field {{{field}}} needs a plain signature"
                    )
                continue
            if root not in self.names:
                raise ConfigurationError(
                    f"key template {template!r} names {root!r}, which is not a parameter "
                    f"of the function ({', '.join(self.names) or 'none'})"
                )

    def values(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> tuple[Any, ...]:
        """The call's arguments in signature order, defaults applied.

        Plain signatures take a fast path (no ``Signature.bind``); anything unusual, and
        every call that does not fit the signature, goes through ``bind`` so that the
        error is Python's own ``TypeError``.
        """
        if self.simple and not kwargs:
            tail = self._tails.get(len(args))
            if tail is not None:
                return args + tail if tail else args
        elif self._keywords_ok and len(args) < len(self.names):
            out = list(args)
            used = 0
            empty = inspect.Parameter.empty
            for index in range(len(args), len(self.names)):
                name = self.names[index]
                if name in kwargs:
                    out.append(kwargs[name])
                    used += 1
                elif self._defaults[index] is not empty:
                    out.append(self._defaults[index])
                else:
                    break
            else:
                if used == len(kwargs):
                    return tuple(out)
        return self._bind(args, kwargs)

    def _bind(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> tuple[Any, ...]:
        bound = self.signature.bind(*args, **kwargs)
        bound.apply_defaults()
        out: list[Any] = []
        for param in self.signature.parameters.values():
            value = bound.arguments[param.name]
            if param.kind is inspect.Parameter.VAR_KEYWORD:
                value = dict(sorted(value.items()))
            out.append(value)
        return tuple(out)

    def __call__(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> str:
        """The user-level key (without namespace) for this call."""
        if self.key_func is not None:
            return normalize_key(self.key_func(*args, **kwargs))
        values = self.values(args, kwargs)
        if self.template is not None:
            text = self.template.format(*values, **dict(zip(self.names, values)))
            return text if len(text) <= MAX_KEY_LENGTH else _shorten(text)
        text = self.base + encode_arguments(values)
        return text if len(text) <= MAX_KEY_LENGTH else _shorten(text)

    def full(self, namespace: Namespace) -> Callable[[tuple[Any, ...], Mapping[str, Any]], str]:
        """A builder of the namespaced key, specialised for the common default-key case."""
        ns = namespace.text
        if self.key_func is None and self.template is None and self.simple:
            base = ns + self.base
            limit = MAX_KEY_LENGTH + len(ns)
            nargs = len(self.names)
            values = self.values
            tails = self._tails
            dumps = orjson.dumps

            def full_key(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> str:
                if kwargs or len(args) != nargs:
                    tail = None if kwargs else tails.get(len(args))
                    args = args + tail if tail is not None else values(args, kwargs)
                text = base + dumps(args, default=_key_default, option=_KEY_OPTIONS).decode()
                return text if len(text) <= limit else ns + _shorten(text[len(ns) :])

            return full_key

        def full_key_general(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> str:
            return ns + self(args, kwargs)

        return full_key_general
