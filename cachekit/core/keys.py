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
from typing import Any, Protocol

import orjson

from ..exceptions import ConfigurationError, InvalidKeyError
from .keyencoding import DEFAULT_ARGUMENT, FAST_TYPES, encode, encode_values, unkeyable

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


_MARK = "…#"
_SHORTENED = re.compile(r"(?s).{0,64}…#[0-9a-f]{64}")
# the form of bytes that are not UTF-8 (see _text), taken as given like a shortened key
_TAGGED = re.compile(r"…#b(?:[0-9a-f]{2})+")


def _is_utf8(text: str) -> bool:
    """Whether ``text`` has a UTF-8 form: no lone surrogate (``"\\ud800"``), which redis-py
    (any Redis client) cannot send in a key, while the memory backend would take it."""
    if text.isascii():  # O(1) in CPython: the common case costs nothing more
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _shorten(key: str) -> str:
    """A readable head and the BLAKE2b-256 of the whole text (collision-free in practice).
    The digest is over the text's surrogatepass bytes (injective for every str); a lone
    surrogate in the head is written as its escape (the head is only for reading)."""
    digest = hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=32).hexdigest()
    head = key[:64]
    if not _is_utf8(head):
        head = head.encode("utf-8", "backslashreplace").decode()[:64]
    return f"{head}{_MARK}{digest}"


def _fit(key: str) -> str:
    """``key``, or its shortened form when it is too long.

    A key that merely looks shortened (holds the ``…#`` mark) is hashed too, so no text can
    pose as another key's shortened form; a key that *is* a shortened form (from
    ``f.key()``), or the tagged form of bytes, is taken as given, so normalising is
    idempotent and ``cache.get(f.key(...))`` finds the entry.

    Text with a lone surrogate has no UTF-8 form, so no Redis key: it becomes the tagged
    form of its surrogatepass bytes (``"\\ud800"`` is ``"…#beda080"``, the key of
    ``b"\\xed\\xa0\\x80"``), distinct for distinct texts, on every backend alike.
    """
    if not _is_utf8(key):
        key = f"{_MARK}b{key.encode('utf-8', 'surrogatepass').hex()}"
        return key if len(key) <= MAX_KEY_LENGTH else _shorten(key)
    if len(key) <= MAX_KEY_LENGTH and (
        _MARK not in key or _SHORTENED.fullmatch(key) or _TAGGED.fullmatch(key)
    ):
        return key
    return _shorten(key)


def normalize_key(key: Any) -> str:
    """The string form of a user key (``cache.get(key)``, ``key=`` callables, item keys).

    Distinct keys give distinct strings, except for these documented equivalences: a str is
    itself; a number, UUID, date or time is the same key as its text (``42`` and ``"42"``,
    ``True`` and ``"true"``, a date and its ISO text); bytes that are UTF-8 are the same key
    as their text; a tuple or list is the same key as the text of its parts joined by
    ``:``, each part's ``%`` and ``:`` escaped as ``%25`` and ``%3A`` (``("user", 42)`` is
    ``"user:42"``, ``("a:b", "c")`` is ``"a%3Ab:c"``, never ``("a", "b:c")``). Bytes that
    are not UTF-8 are the same key as ``"…#b"`` and their hex (``b"\\x80"`` is ``"…#b80"``,
    not ``"\\\\x80"``); a str with a lone surrogate is the same key as its bytes as
    ``surrogatepass`` writes them (``"\\ud800"`` and ``b"\\xed\\xa0\\x80"``), since a Redis
    key must be UTF-8. A normalised key is the same key as the key it came from
    (``cache.get(f.key(...))``). Redis keys are binary-safe, so spaces, newlines and unicode
    are kept; keys longer than :data:`MAX_KEY_LENGTH` are hashed. Anything else, and an
    empty tuple, is an :class:`InvalidKeyError`.
    """
    if type(key) is str:
        # an ASCII key (isascii is O(1)) can hold neither the mark nor a lone surrogate
        if len(key) <= MAX_KEY_LENGTH and (key.isascii() or (_MARK not in key and _is_utf8(key))):
            return key
        return _fit(key)
    return _fit(_text(key))


def _text(key: Any) -> str:
    """A key's text before :func:`_fit` (the equivalences of :func:`normalize_key`)."""
    if isinstance(key, str):
        return str.__str__(key)
    if isinstance(key, (bytes, bytearray, memoryview)):
        raw = bytes(key)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            # The tag holds the mark: a str key spelling it is this same key (taken as
            # given by _fit), and no other text, "\\x80" included, is.
            return f"{_MARK}b{raw.hex()}"
    if isinstance(key, (tuple, list)):
        if not key:
            raise InvalidKeyError("an empty tuple is not a cache key")
        return ":".join([_escape_part(_text(part)) for part in key])
    # The base class's text, not a subclass's __str__ (an int subclass printing its name
    # would collide with that str); datetimes keep their own isoformat (pandas Timestamps
    # carry nanoseconds in theirs).
    if isinstance(key, bool):
        return "true" if key else "false"
    if isinstance(key, int):
        return int.__repr__(key)
    if isinstance(key, float):
        return float.__repr__(key)
    if isinstance(key, Decimal):
        return Decimal.__str__(key)
    if isinstance(key, uuid.UUID):
        return uuid.UUID.__str__(key)
    if isinstance(key, (datetime, date, time)):
        return key.isoformat()
    raise InvalidKeyError(
        f"cache keys are str, numbers, UUIDs, dates, bytes or tuples of those; "
        f"got {type(key).__qualname__}"
    )


def _escape_part(text: str) -> str:
    """A tuple part's text with ``%`` and ``:`` escaped, so the parts can be told apart."""
    if ":" in text or "%" in text:
        return text.replace("%", "%25").replace(":", "%3A")
    return text


def escape_glob(text: str) -> str:
    """Escape Redis glob metacharacters so ``text`` matches only itself in SCAN MATCH."""
    return re.sub(r"([\\*?\[\]])", r"\\\1", text)


def _segment(part: str) -> str:
    """A namespace part with no ':' in it (and, so that this is reversible, no bare '%')."""
    if ":" in part or "%" in part:
        return part.replace("%", "%25").replace(":", "%3A")
    return part


class Placed(Protocol):
    """What holds the namespace keys are built in (a Generation: it moves with a bump)."""

    @property
    def ns(self) -> Namespace: ...


class _Fixed:
    """A namespace that never moves, as a :class:`Placed`."""

    __slots__ = ("ns",)

    def __init__(self, ns: Namespace) -> None:
        self.ns = ns


class Namespace:
    """``{prefix}:{version}:`` in front of every key of one cache."""

    __slots__ = ("pattern_prefix", "prefix", "text", "version")

    def __init__(self, prefix: str, version: int | str = 1, owner: str | None = None) -> None:
        if not isinstance(prefix, str) or not prefix:
            raise ConfigurationError("prefix must be a non-empty string")
        if prefix.startswith(INTERNAL_MARK):  # its namespace would cover another's internals
            raise ConfigurationError(
                f"prefix must not start with {INTERNAL_MARK!r} (reserved for cachekit's own keys)"
            )
        if version == "" and owner is None:  # "{prefix}:" would hold "{prefix}:1:"
            raise ConfigurationError("version must not be empty")
        self.prefix = prefix
        self.version = version
        # The namespaces of two caches never hold one another (one's clear() or keys never
        # reach the other's entries): ':' and '%' are escaped in each part, so the first
        # ':' ends the prefix and the next the version (prefix "app:1" is "app%3A1:1:",
        # not inside "app:1:"). Parts without them read as they always did.
        head = _segment(prefix) if owner is None else f"!{_segment(owner)}:{_segment(prefix)}"
        # version "" is an unversioned namespace, "!owner:{prefix}:" (the Django adapter's:
        # Django puts its own version in every key)
        self.text = f"{head}:{_segment(str(version))}:" if version != "" else f"{head}:"
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

    def generation(self, number: int) -> Namespace:
        """The namespace of this one's entries at generation ``number`` (see
        :mod:`cachekit.core.generation`): itself at 0, else ``{prefix}:{version}%g{n}:``.

        The mark goes inside the last segment, where a bare ``%`` never occurs (segments
        escape it as ``%25``): so no generation of one namespace holds another's keys, nor
        any generation of another namespace, and no user key of generation 0 (``g1:x``
        is ``{prefix}:{version}:g1:x``) is a key of generation 1.
        """
        if number == 0:
            return self
        other = object.__new__(Namespace)
        other.prefix = self.prefix
        other.version = self.version
        other.text = f"{self.text[:-1]}{GENERATION_MARK}{number}:"
        other.pattern_prefix = escape_glob(other.text)
        return other

    @property
    def generations_pattern(self) -> str:
        """The glob over the entries of every generation above 0 (with :meth:`pattern`
        ``("*")``, the entries of every generation: what ``clear()`` removes)."""
        return escape_glob(self.text[:-1] + GENERATION_MARK) + "*"


GENERATION_MARK = "%g"
"""Ends a namespace's last segment at generations above 0 (a bare ``%`` is never there)."""


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


_SIMPLE_KINDS = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
_FIELD_PART = re.compile(r"\.([^.\[]+)|\[([^\]]+)\]")


def _escape_char(char: str) -> str:
    code = ord(char)
    return f"%{code:02X}" if code < 0x100 else f"%u{code:06X}"


class _Field:
    """One replacement field of a key template, and how its text is kept apart from the
    next field: the first character of the literal text after it (``:`` in
    ``"perm:{user}:{resource}"``) is percent-escaped in the value, and so is ``%``, so the
    end of each value can be found again: ``user="admin:x"`` gives ``perm:admin%3Ax:...``.
    A field followed only by the end of the template needs nothing (``user:42``)."""

    __slots__ = ("conversion", "escaped", "index", "literal", "path", "spec", "stop")

    def __init__(
        self,
        index: int,
        path: tuple[tuple[bool, str | int], ...],
        conversion: str | None,
        spec: str,
        literal: str,
    ) -> None:
        self.index, self.path, self.conversion, self.spec = index, path, conversion, spec
        self.literal = literal  # the literal text that follows the field
        self.stop = literal[:1]
        self.escaped = _escape_char(self.stop) if self.stop else ""

    def render(self, values: tuple[Any, ...]) -> str:
        value = values[self.index]
        for is_attribute, name in self.path:
            value = getattr(value, name) if is_attribute else value[name]  # type: ignore[arg-type]
        kind = type(value)
        if kind is str and self.conversion is None and not self.spec:
            text: str = value
        elif kind is int and self.conversion is None and not self.spec:
            text = str(value)
        else:
            text = self._format(value)
        stop = self.stop
        if stop and (stop in text or "%" in text):
            text = text.replace("%", "%25")
            if stop != "%":  # a literal starting with "%" is kept apart by the line above
                text = text.replace(stop, self.escaped)
        return text + self.literal

    def _format(self, value: Any) -> str:
        kind: Any = type(value)
        by_repr = self.conversion in ("r", "a")
        default_str = kind.__str__ is object.__str__ and kind.__format__ is object.__format__
        if kind.__repr__ is object.__repr__ and (by_repr or default_str):
            raise unkeyable(kind, "it would format as its address in memory")
        if self.conversion == "r":
            value = repr(value)
        elif self.conversion == "a":
            value = ascii(value)
        elif self.conversion == "s":
            value = str(value)
        return format(value, self.spec)


class KeyTemplate:
    """A key template (``"user:{user_id}"``, ``"{user.id}"``), parsed once."""

    def __init__(self, template: str, names: tuple[str, ...], positional: bool) -> None:
        parsed = list(string.Formatter().parse(template))
        self.head = ""
        self.fields: list[_Field] = []
        auto = 0
        for position, (literal, field, spec, conversion) in enumerate(parsed):
            if position == 0:
                self.head = literal
            if field is None:
                continue
            following = parsed[position + 1] if position + 1 < len(parsed) else None
            after = following[0] if following is not None else ""
            if following is not None and following[1] is not None and not after:
                raise ConfigurationError(
                    f"key template {template!r}: {{{field}}} and {{{following[1]}}} must be "
                    f"separated by some text (e.g. ':'), or their values could run together"
                )
            if spec and "{" in spec:
                raise ConfigurationError(
                    f"key template {template!r}: nested fields in a format spec are not supported"
                )
            match = re.match(r"[^.\[]*", field)
            root = match.group(0) if match else ""
            rest = field[len(root) :]
            path: list[tuple[bool, str | int]] = []
            while rest:
                part = _FIELD_PART.match(rest)
                if part is None:
                    raise ConfigurationError(f"key template {template!r}: bad field {{{field}}}")
                attribute, item = part.groups()
                if attribute is not None:
                    path.append((True, attribute))
                else:
                    path.append((False, int(item) if item.isdigit() else item))
                rest = rest[part.end() :]
            if root == "" or root.isdigit():
                if not positional:
                    raise ConfigurationError(
                        f"positional field {{{field}}} needs a plain signature"
                    )
                index = auto if root == "" else int(root)
                auto += 1
                if index >= len(names):
                    raise ConfigurationError(
                        f"key template {template!r}: {{{field}}} is past the function's "
                        f"{len(names)} parameters"
                    )
            elif root in names:
                index = names.index(root)
            else:
                raise ConfigurationError(
                    f"key template {template!r} names {root!r}, which is not a parameter "
                    f"of the function ({', '.join(names) or 'none'})"
                )
            self.fields.append(_Field(index, tuple(path), conversion, spec or "", after))

    def render(self, values: tuple[Any, ...]) -> str:
        return self.head + "".join([field.render(values) for field in self.fields])

    def key(self, values: tuple[Any, ...]) -> str:
        """The rendered key, hashed when long. A rendered key is never taken as a shortened
        form (as a user key from f.key() is): the digest is public, so an argument of head
        + mark + digest would otherwise read another argument's entry. Any mark: hash it."""
        text = self.render(values)
        if len(text) <= MAX_KEY_LENGTH and (
            text.isascii() or (_MARK not in text and _is_utf8(text))
        ):
            return text
        return _shorten(text)  # a lone surrogate in a value, too: no Redis key could hold it


class KeyBuilder:
    """Turns a call ``f(*args, **kwargs)`` into the entry's key, once per decorated function.

    The arguments are normalised through the signature with defaults applied, so
    ``f(1, b=2)``, ``f(a=1, b=2)`` and ``f(1)`` (when ``b=2`` is the default) share a key.
    The default key is ``module.qualname:`` and the injective text of the arguments
    (:mod:`cachekit.core.keyencoding`); a value that cannot be keyed faithfully raises
    :class:`InvalidKeyError` naming the argument. ``key`` may be a template over the bound
    arguments (``"user:{user_id}"``, ``"{user.id}"``; values are escaped so that fields
    cannot run together) or a callable taking the function's arguments and returning a key.
    ``name`` replaces ``module.qualname`` in the default key (closures of one factory share
    their qualname: see :mod:`cachekit.decorator.names`).
    """

    def __init__(
        self,
        func: Callable[..., Any],
        key: str | Callable[..., Any] | None = None,
        name: str | None = None,
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
        # Defaults with no value identity (a sentinel ``object()``): the default object
        # itself is keyed as "this parameter's default", which is what the function sees.
        self._opaque: dict[int, Any] = {}
        for index, default in enumerate(self._defaults):
            if default is inspect.Parameter.empty:
                continue
            try:
                encode(default)
            except Exception:  # unkeyable (or its __cache_key__ fails): keyed as itself
                self._opaque[index] = default
        self.func_name = f"{func.__module__}.{func.__qualname__}"
        if name is not None and (not isinstance(name, str) or not name):
            raise ConfigurationError(f"name must be a non-empty string, not {name!r}")
        if name is not None and key is not None:
            raise ConfigurationError("name= names the default key: give name= or key=, not both")
        if name is not None and not _is_utf8(name):
            raise ConfigurationError(f"name must be valid Unicode (a lone surrogate in {name!r})")
        base = self.func_name if name is None else name
        if not _is_utf8(base):  # a __qualname__ set by hand: every key would be refused
            base = base.encode("utf-8", "backslashreplace").decode()
        self.base = base + ":"
        self.text = self._text_encoder()
        """The injective text of the arguments (a tuple in signature order)."""
        self.template: KeyTemplate | None = None
        self.key_func: Callable[..., Any] | None = None
        if isinstance(key, str):
            self.template = KeyTemplate(key, self.names, self.simple)
        elif callable(key):
            self.key_func = key
        elif key is not None:
            raise ConfigurationError(f"key must be a template string or a callable, not {key!r}")

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

    def _text_encoder(self) -> Callable[[tuple[Any, ...]], str]:
        """``text(values)``: :meth:`encode`, with a fast path for arguments that are all
        str, int, bool or None, whose text is exactly ``orjson.dumps(values)``. The check
        is unrolled for up to three parameters: a Python loop costs more than the dump."""
        dumps, fast, slow = orjson.dumps, FAST_TYPES, self.encode
        count = len(self.names)
        # TypeError from dumps: an int beyond 64 bits, a str with lone surrogates

        def text1(values: tuple[Any, ...]) -> str:
            if type(values[0]) in fast:
                try:
                    return dumps(values).decode()
                except TypeError:
                    pass
            return slow(values)

        def text2(values: tuple[Any, ...]) -> str:
            if type(values[0]) in fast and type(values[1]) in fast:
                try:
                    return dumps(values).decode()
                except TypeError:
                    pass
            return slow(values)

        def text3(values: tuple[Any, ...]) -> str:
            if type(values[0]) in fast and type(values[1]) in fast and type(values[2]) in fast:
                try:
                    return dumps(values).decode()
                except TypeError:
                    pass
            return slow(values)

        def text(values: tuple[Any, ...]) -> str:
            for value in values:
                if type(value) not in fast:
                    return slow(values)
            try:
                return dumps(values).decode()
            except TypeError:
                return slow(values)

        return {0: lambda values: "[]", 1: text1, 2: text2, 3: text3}.get(count, text)

    def encode(self, values: tuple[Any, ...]) -> str:
        """The injective text of the arguments ``values`` (in signature order)."""
        if self._opaque:
            values = tuple(
                DEFAULT_ARGUMENT
                if index in self._opaque and value is self._opaque[index]
                else value
                for index, value in enumerate(values)
            )
        try:
            return encode_values(values)
        except InvalidKeyError as exc:
            raise self._unkeyable(values, exc) from exc

    def _unkeyable(self, values: tuple[Any, ...], exc: InvalidKeyError) -> InvalidKeyError:
        for name, value in zip(self.names, values):
            try:
                encode(value)
            except (InvalidKeyError, RecursionError) as inner:
                return InvalidKeyError(f"{self.func_name}(): argument {name!r}: {inner}")
        return exc

    def __call__(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> str:
        """The user-level key (without namespace) for this call."""
        if self.key_func is not None:
            return normalize_key(self.key_func(*args, **kwargs))
        values = self.values(args, kwargs)
        if self.template is not None:
            return self.template.key(values)
        text = self.base + self.text(values)
        # a default key ends with "]", a shortened one with a hex digit: no mark check
        return text if len(text) <= MAX_KEY_LENGTH else _shorten(text)

    def full(
        self, where: Namespace | Placed
    ) -> Callable[[tuple[Any, ...], Mapping[str, Any]], str]:
        """A builder of the namespaced key, specialised for the common default-key case.

        ``where`` is the namespace, or what holds the namespace of the moment (``.ns``: a
        :class:`~cachekit.core.generation.Generation`, whose namespace moves with a bump),
        read at every call: a builder follows a bump with no frame of its own."""
        source: Placed = _Fixed(where) if isinstance(where, Namespace) else where
        if self.key_func is None and self.template is None and self.simple:
            base = self.base
            limit = MAX_KEY_LENGTH
            nargs = len(self.names)
            values = self.values
            tails = self._tails
            dumps = orjson.dumps
            fast = FAST_TYPES
            slow = self.encode
            text_of = self.text

            def placed(ns: str, text: str) -> str:  # the namespace, and a key of at most the limit
                return ns + text if len(text) <= MAX_KEY_LENGTH else ns + _shorten(text)

            # one and two parameters (get_user(user_id)): the check inlined, a frame less
            if nargs == 1:

                def full_key(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> str:
                    if kwargs or len(args) != 1:
                        tail = None if kwargs else tails.get(len(args))
                        args = args + tail if tail is not None else values(args, kwargs)
                    if type(args[0]) in fast:
                        try:
                            text = base + dumps(args).decode()
                        except TypeError:  # an int beyond 64 bits, a str with lone surrogates
                            text = base + slow(args)
                    else:
                        text = base + slow(args)
                    if len(text) <= limit:
                        return source.ns.text + text
                    return placed(source.ns.text, text)

                return full_key

            if nargs == 2:

                def full_key_2(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> str:
                    if kwargs or len(args) != 2:
                        tail = None if kwargs else tails.get(len(args))
                        args = args + tail if tail is not None else values(args, kwargs)
                    if type(args[0]) in fast and type(args[1]) in fast:
                        try:
                            text = base + dumps(args).decode()
                        except TypeError:
                            text = base + slow(args)
                    else:
                        text = base + slow(args)
                    if len(text) <= limit:
                        return source.ns.text + text
                    return placed(source.ns.text, text)

                return full_key_2

            def full_key_n(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> str:
                if kwargs or len(args) != nargs:
                    tail = None if kwargs else tails.get(len(args))
                    args = args + tail if tail is not None else values(args, kwargs)
                return placed(source.ns.text, base + text_of(args))

            return full_key_n

        def full_key_general(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> str:
            return source.ns.text + self(args, kwargs)

        return full_key_general
