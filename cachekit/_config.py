"""cachekit's options: one table, and the one function that merges and checks them.

Every way of configuring a :class:`~cachekit.Cache` reads :data:`OPTIONS`: keyword
arguments, the cache URL's query string (``redis://host/0?prefix=shop``), ``CACHEKIT_*``
environment variables (:meth:`Cache.from_env`), Flask's ``app.config`` (``CACHEKIT_*``
keys), Django's ``OPTIONS`` and :meth:`Cache.with_options`. An option each of them has
not heard of is a :class:`~cachekit.ConfigurationError` naming it, suggesting the
nearest known name and listing the accepted ones; so is a value its check refuses.

Precedence, the same everywhere (:func:`merge`): **arguments > URL query > settings >
default**. "Arguments" are ``Cache(...)`` / ``from_env(...)`` / ``with_options(...)``
keywords; "settings" are the environment, ``app.config`` or Django ``OPTIONS``. So
``Cache.from_env(prefix="x")`` wins over ``CACHEKIT_URL=redis://h/0?prefix=y``, which wins
over ``CACHEKIT_PREFIX=z``. In arguments, ``None`` means "not given".

Text (URL query, environment, or a string in framework settings) goes through the
option's ``parse`` first; Python values from keyword arguments are checked as they are
(``default_ttl="30"`` is refused rather than guessed at).
"""

from __future__ import annotations

import difflib
import functools
import inspect
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .core.policy import ttl_seconds
from .exceptions import ConfigurationError

__all__ = [
    "OPTIONS",
    "Layer",
    "Option",
    "accepted_names",
    "check_value",
    "merge",
    "options_table_markdown",
    "redis_url_arguments",
    "unknown_option",
]


# -- checks: a value in, the normalised value out, or ValueError/TypeError saying why ---------
def _prefix(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError("it must be a non-empty string")
    if value[0] in _RESERVED_MARKS:
        # "!name:" opens the namespaces of framework adapters (Django's is "!django:..."),
        # "#" cachekit's internal keys (_keys.INTERNAL_MARK): a plain prefix can produce
        # neither, so no plain cache reads or clears another's entries or bookkeeping
        raise ValueError(
            "a prefix may not start with '!' or '#': they mark framework adapters' "
            "namespaces and cachekit's internal keys"
        )
    if value != value.strip():
        # Refused, not stripped: text sources (URL, environment) used to strip and
        # arguments did not, so " shop" named one namespace here and another there.
        # Stripping everywhere would silently move the namespace of whoever passes
        # " shop" today (entries, locks, queues left behind) and make two strings one
        # namespace; refusing says so at construction and loses nothing.
        raise ValueError("it may not start or end with whitespace")
    _refuse_lone_surrogates(value)
    return value


_RESERVED_MARKS = ("!", "#")


def _version(value: Any) -> int | str:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ValueError("it must be an int or a string")
    if isinstance(value, str):
        _refuse_lone_surrogates(value)
    return value


def _refuse_lone_surrogates(text: str) -> None:
    """A namespace part must have a UTF-8 form: no Redis key can hold a lone surrogate."""
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError("it must be valid Unicode (it holds a lone surrogate)") from None


def _ttl(value: Any) -> float | None:
    try:
        return ttl_seconds(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(str(exc)) from None


def _default_ttl(value: Any) -> float | None:
    seconds = _ttl(value)
    if seconds is not None and seconds <= 0:  # a cache that silently stores nothing
        raise ValueError(
            "it must be more than 0 seconds, or None for no expiry (0 or less would make "
            "every store a delete)"
        )
    return seconds


def _optional_str(value: Any) -> str | None:
    if value is not None and not isinstance(value, str):
        raise ValueError("it must be a string or None")
    return value


def _serializer(value: Any) -> Any:
    # names and objects are checked by get_serializer() when the cache is built
    if value is not None and not isinstance(value, str) and not hasattr(value, "dumps"):
        raise ValueError("it must be a serializer name or an object with dumps() and loads()")
    return value


def _secret(value: Any) -> str | bytes | None:
    if value is not None and (not isinstance(value, (str, bytes)) or not value):
        raise ValueError("it must be a non-empty string or bytes")
    return value


def _compress(value: Any) -> str | None:
    if value not in (None, "zlib", "zstd", "auto"):
        raise ValueError("it must be None, 'zlib', 'zstd' or 'auto'")
    return value  # type: ignore[no-any-return]


def _int(minimum: int) -> Callable[[Any], int]:
    def check(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ValueError(f"it must be an integer >= {minimum}")
        return value

    return check


def _seconds(value: Any) -> float:
    """A positive, finite number of seconds (a socket timeout, a probe interval)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError("it must be a number of seconds")
    if not (math.isfinite(value) and value > 0):
        raise ValueError("it must be a finite number of seconds > 0")
    return float(value)


def _poll_seconds(value: Any) -> float:
    """A finite number of seconds >= 0 (0: every time)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError("it must be a number of seconds")
    if not (math.isfinite(value) and value >= 0):
        raise ValueError("it must be a finite number of seconds >= 0")
    return float(value)


def _optional_seconds(value: Any) -> float | None:
    return None if value is None else _seconds(value)


def _choice(*choices: str) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        if value not in choices:
            raise ValueError("it must be " + " or ".join(repr(c) for c in choices))
        return value  # type: ignore[no-any-return]

    return check


def _cookie_names(value: Any) -> tuple[str, ...]:
    from .http.rules import cookie_globs  # imported here: cachekit.http imports Cache

    return cookie_globs(() if value is None else value)


def _name_list(text: str) -> tuple[str, ...]:
    return tuple(name.strip() for name in text.split(",") if name.strip())


def _near(value: Any) -> Any:
    from .near._store import near_option  # no import cycle: near imports the backends

    return near_option(value)


def _near_text(text: str) -> Any:
    from .near._store import parse_near

    return parse_near(text)


def _metrics(value: Any) -> Any:
    # the exporter itself is made (and its extra imported) when the cache is built
    if value is None or value in ("prometheus", "otel"):
        return value
    if isinstance(value, str) or not any(hasattr(value, m) for m in ("watch", "create_histogram")):
        raise ValueError("it must be 'prometheus', 'otel', an OpenTelemetry Meter or an exporter")
    return value


def _owner(value: Any) -> str | None:
    if value is not None and not (isinstance(value, str) and value.isidentifier()):
        raise ValueError("it must be an identifier such as 'django'")
    return value


# -- parsers: text (URL query, environment, settings strings) to a Python value --------------
_NONE_TEXT = ("", "none", "null")


def _text_or_none(text: str) -> str | None:
    return None if text.lower() in _NONE_TEXT else text


def _float_or_none(text: str) -> float | None:
    return None if text.lower() in _NONE_TEXT else float(text)


@dataclass(frozen=True)
class Option:
    """One option: its name, type (as documented), default, check, parser and doc."""

    name: str
    type: str
    default: Any
    check: Callable[[Any], Any]
    doc: str
    parse: Callable[[str], Any] = str
    strip: bool = True  # text is stripped before parse() (False: the check sees it all)
    in_url: bool = True  # may appear in a cache URL's query string
    in_settings: bool = True  # may come from the environment / app.config / Django OPTIONS
    derivable: bool = True  # with_options() may change it (False: it belongs to the backend)


OPTIONS: dict[str, Option] = {
    option.name: option
    for option in (
        Option("prefix", "str", "cachekit", _prefix,
               "the namespace's name: keys are `prefix:version:key` (no leading `!` or `#`; "
               "a `:` or `%` in it is escaped, so no namespace holds another; no leading or "
               "trailing whitespace, from any source)", strip=False),
        Option("version", "int | str", 1, _version,
               "the namespace's version; change it to drop every entry at once"),
        Option("default_ttl", "float | None", None, _default_ttl,
               "seconds when a call gives no `ttl` (`None`: no expiry)", _float_or_none),
        Option("serializer", "str | Serializer", None, _serializer,
               '`"orjson"` (default on Redis; objects as they are on memory), `"json"`, '
               '`"msgpack"`, `"raw"`, `"text"`, `"pickle"` (needs `secret`), or an object '
               "with `dumps`/`loads`", _text_or_none),
        Option("secret", "str | bytes", None, _secret,
               "signs every entry, bound to its key (any serializer; `pickle` needs one); "
               "never in a URL: URLs get logged",
               in_url=False),
        Option("compress", "str | None", None, _compress,
               '`"zlib"`, `"zstd"` or `"auto"`: compress entries above `compress_threshold`',
               _text_or_none),
        Option("compress_threshold", "int", 1024, _int(0),
               "bytes from which entries are compressed", int),
        Option("max_decompressed_size", "int", 64 * 1024 * 1024, _int(1),
               "bytes a compressed entry may inflate to: past it, a miss (a zip bomb costs "
               "no more)", int),
        Option("timeout", "float", 0.25, _seconds,
               "Redis socket timeout (seconds): fail fast, then fail open", float,
               derivable=False),
        Option("connect_timeout", "float | None", None, _optional_seconds,
               "Redis connect timeout (seconds; `None`: as `timeout`)", _float_or_none,
               derivable=False),
        Option("on_error", "str", "ignore", _choice("ignore", "raise"),
               '`"ignore"`: log, count and go on without the cache; `"raise"`: raise '
               "`BackendError`"),
        Option("retry_interval", "float", 0.2, _seconds,
               "seconds between the circuit breaker's probes of a backend that went away",
               float),
        Option("generation_poll", "float", 1.0, _poll_seconds,
               "Redis: seconds a process trusts the namespace generation it read before "
               "reading it again: other processes see `invalidate_all()` within this "
               "(0: read on every call; with `near`, at once through its link)", float),
        Option("max_entries", "int", 10_000, _int(1),
               "memory backend: how many entries it keeps", int, derivable=False),
        Option("eviction", "str", "lru", _choice("lru", "tinylfu"),
               'memory backend: `"lru"`, or `"tinylfu"` (W-TinyLFU admission: higher hit '
               "ratio under scans, about twice the cost per hit)", derivable=False),
        Option("ignore_cookies", "list[str]", (), _cookie_names,
               "HTTP caching: cookie name globs that tell no users apart (`_ga*`, `consent`); "
               "a request with any other cookie gets no shared page unless it is `public` "
               "(text: comma-separated)", _name_list),
        Option("vary_cookies", "list[str]", (), _cookie_names,
               "HTTP caching: cookie name globs that select a variant (`lang`): pages are "
               "stored per value of these (text: comma-separated)", _name_list),
        Option("near", "bool | dict", None, _near,
               "Redis: an in-process L1 in front of it, kept coherent across processes "
               '(`True`, or `{"max_entries": 10_000, "max_stale": 1.0}`: see Near cache)',
               _near_text, in_settings=True, derivable=False),
        Option("metrics", "str | None", None, _metrics,
               '`"prometheus"` (prometheus-client) or `"otel"` (OpenTelemetry), or a `Meter` '
               "or exporter object: see Metrics", _text_or_none),
        Option("owner", "str | None", None, _owner,
               "for framework adapters: the namespace becomes `!owner:prefix:...`, which no "
               "plain prefix can produce", in_url=False, in_settings=False, derivable=False),
    )
}  # fmt: skip
"""Every option of :class:`cachekit.Cache`, in documentation order."""


# -- redis-py's own URL query arguments ------------------------------------------------------
# redis-py converts the names in its URL_QUERY_ARGUMENT_PARSERS and hands any other query
# argument to the connection class as a string; these take text, so a string is what they
# want. A name only passes if the scheme's connection classes (sync and asyncio, since
# cachekit builds both from one URL) really accept it: anything else would fail on every
# call, long after construction.
_REDIS_TEXT_ARGUMENTS = frozenset(
    {
        "client_name", "username", "password", "encoding", "encoding_errors", "lib_name",
        "lib_version", "ssl_cert_reqs", "ssl_keyfile", "ssl_certfile", "ssl_ca_certs",
        "ssl_ca_path", "ssl_password", "ssl_ciphers",
    }
)  # fmt: skip
# set by cachekit itself: it stores bytes
_REDIS_REFUSED = frozenset({"decode_responses"})


def _init_parameters(cls: type) -> set[str]:
    names: set[str] = set()
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        for name, parameter in inspect.signature(init).parameters.items():
            if name != "self" and parameter.kind not in (
                parameter.VAR_POSITIONAL,
                parameter.VAR_KEYWORD,
            ):
                names.add(name)
    return names


@functools.cache
def redis_url_arguments(scheme: str) -> frozenset[str]:
    """The query arguments redis-py's ``from_url`` takes for ``scheme`` (sync and asyncio)."""
    import redis.asyncio.connection as aio
    import redis.connection as sync

    parsed = set(sync.URL_QUERY_ARGUMENT_PARSERS) & set(aio.URL_QUERY_ARGUMENT_PARSERS)
    accepted = set.intersection(
        *(
            _init_parameters(module.ConnectionPool) | _init_parameters(connection)
            for module in (sync, aio)
            for connection in (
                {
                    "rediss": module.SSLConnection,
                    "unix": module.UnixDomainSocketConnection,
                }.get(scheme, module.Connection),
            )
        )
    )
    return frozenset(((parsed | _REDIS_TEXT_ARGUMENTS) & accepted) - _REDIS_REFUSED)


# -- errors ------------------------------------------------------------------------------------
def unknown_option(
    name: str, accepted: Iterable[str], where: str, others: Mapping[str, Iterable[str]] = {}
) -> ConfigurationError:
    """The error for an option ``where`` does not take: the nearest name and the list
    (``others``: more accepted names by whose they are, e.g. ``{"redis-py's": [...]}``)."""
    known = list(dict.fromkeys(accepted))
    groups = {label: sorted(names) for label, names in others.items()}
    candidates = known + [n for names in groups.values() for n in names]
    close = difflib.get_close_matches(name, candidates, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    listed = "".join(f"; {label}: {', '.join(names)}" for label, names in groups.items())
    return ConfigurationError(
        f"unknown option {name!r} in {where}{hint}; accepted: {', '.join(known)}{listed}"
    )


def _bad_value(spelled: str, value: Any, where: str, reason: str) -> ConfigurationError:
    return ConfigurationError(f"bad value for {spelled} in {where}: {value!r} ({reason})")


# -- merging -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Layer:
    """Options from one source: ``values`` by option name, most specific layer first."""

    where: str  # for messages: "arguments", "the cache URL", "the environment", ...
    values: Mapping[str, Any]
    text: bool = False  # values may be text, converted by each option's parse()
    kind: str = "arguments"  # "arguments", "url", "settings" or "with_options"
    spelling: str = "{name}"  # how names are written in this source: "CACHEKIT_{NAME}"
    also: tuple[str, ...] = ()  # other names the source takes (listed in errors), spelled

    def spell(self, name: str) -> str:
        return self.spelling.format(name=name, NAME=name.upper())


def accepted_names(kind: str) -> list[str]:
    """The options a source of this kind takes, in table order."""
    return [
        option.name
        for option in OPTIONS.values()
        if {
            "url": option.in_url,
            "settings": option.in_settings,
            "with_options": option.derivable,
        }.get(kind, True)
    ]


def check_value(name: str, value: Any, *, text: bool = False, where: str = "arguments") -> Any:
    """One option's value, converted from text if ``text`` and it is a string, and checked."""
    return _checked(OPTIONS[name], value, Layer(where, {}, text=text))


def _checked(option: Option, value: Any, layer: Layer) -> Any:
    if layer.text and isinstance(value, str):
        try:
            value = option.parse(value.strip() if option.strip else value)
        except ValueError:
            reason = f"not text for {option.type}"
            raise _bad_value(layer.spell(option.name), value, layer.where, reason) from None
    try:
        return option.check(value)
    except (TypeError, ValueError) as exc:
        reason = str(exc) or type(exc).__name__
        raise _bad_value(layer.spell(option.name), value, layer.where, reason) from None


def merge(layers: Sequence[Layer]) -> dict[str, Any]:
    """Every option's value: from the first layer that gives it, else its default.

    Each layer's names are checked against what its kind accepts, and each value given is
    checked (after parsing text); the first problem raises :class:`ConfigurationError`.
    """
    merged: dict[str, Any] = {}
    for layer in layers:
        accepted = accepted_names(layer.kind)
        for name, value in layer.values.items():
            if name not in accepted:
                if name in OPTIONS:
                    raise ConfigurationError(
                        f"{layer.spell(name)} cannot be given in {layer.where}: "
                        + _why_not(name, layer.kind)
                    )
                raise unknown_option(
                    layer.spell(name), [*layer.also, *map(layer.spell, accepted)], layer.where
                )
            if name in merged or (layer.kind == "arguments" and value is None):
                continue
            merged[name] = _checked(OPTIONS[name], value, layer)
    return {option.name: merged.get(option.name, option.default) for option in OPTIONS.values()}


def _why_not(name: str, kind: str) -> str:
    if kind == "with_options":
        return "it belongs to the backend, which a derived cache shares"
    if name == "secret":
        return "a URL gets logged; pass secret= or CACHEKIT_SECRET"
    return "it is for framework adapters, as a keyword argument"


# -- documentation -----------------------------------------------------------------------------
def options_table_markdown() -> str:
    """The README's options table, made from :data:`OPTIONS` (a test keeps them equal)."""
    rows = ["| option | type | default | meaning |", "|---|---|---|---|"]
    for option in OPTIONS.values():
        default = option.default
        default = f'`"{default}"`' if isinstance(default, str) else f"`{default}`"
        kind = option.type.replace(" | ", " or ")  # a bare | would end the table cell
        rows.append(f"| `{option.name}` | `{kind}` | {default} | {option.doc} |")
    return "\n".join(rows)
