"""Which cookies may tell a requester apart, and which select a variant (the
``ignore_cookies`` / ``vary_cookies`` policy options). Pure."""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from ..exceptions import ConfigurationError

if TYPE_CHECKING:
    from .rules import HttpCachePolicy, Request


# --------------------------------------------------------------------------- types

_COOKIE_NAME_BAD = re.compile(r"[\s;,=\"]")


def cookie_globs(value: Iterable[str]) -> tuple[str, ...]:
    """``ignore_cookies`` / ``vary_cookies`` checked: cookie name globs (fnmatch syntax,
    case-sensitive) as a tuple. Raises :class:`ConfigurationError` for a string (a list of
    names is wanted), an empty name, or one with whitespace, ``;``, ``,``, ``=`` or ``"``."""
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        raise ConfigurationError(
            f"cookie names are a list of globs (e.g. ['_ga*', 'consent']), not {value!r}"
        )
    globs = tuple(value)
    for glob in globs:
        if not isinstance(glob, str) or not glob or _COOKIE_NAME_BAD.search(glob):
            raise ConfigurationError(f"not a cookie name glob: {glob!r}")
    return tuple(dict.fromkeys(globs))


# ----------------------------------------------------------------------- cookies

_COOKIE_VARY = "cookie="  # a vary name "cookie=<glob>": the values of the cookies it matches


def _cookies(req: Request, *, commas: bool = False) -> list[tuple[str, str]]:
    """The request's cookies as (name, value), in order (RFC 6265 5.4; lenient).

    Several Cookie fields (HTTP/2) reach us joined by ", ": `commas` splits there too, so
    that no cookie hides inside another's value when names are what counts; values (for
    a variant's key) keep the commas, so distinct headers keep distinct values."""
    header = req.header("cookie")
    if not header:
        return []
    pairs = []
    for piece in (header.replace(",", ";") if commas else header).split(";"):
        name, _, value = piece.partition("=")
        name = name.strip()
        if name or value.strip():
            pairs.append((name, value.strip()))
    return pairs


def _matches(name: str, globs: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, glob) for glob in globs)


def identifying_cookies(req: Request, policy: HttpCachePolicy) -> tuple[str, ...]:
    """The names of the request's cookies that may tell its sender apart: all but those
    matching `policy.ignore_cookies` or `policy.vary_cookies`.

    A request carrying one is neither served nor stored a shared page unless that page
    says ``Cache-Control: public`` or varies on the whole ``Cookie`` header (as Varnish
    does by default): a handler may read any cookie, or the raw header, and nothing
    outside it can see which it read.
    """
    skip = policy.ignore_cookies + policy.vary_cookies
    return tuple(name for name, _ in _cookies(req, commas=True) if not _matches(name, skip))


def _cookie_vary_names(policy: HttpCachePolicy) -> tuple[str, ...]:
    return tuple(_COOKIE_VARY + glob for glob in policy.vary_cookies)


def _shared_with_cookies(directives: Mapping[str, str | None], vary: Iterable[str]) -> bool:
    # public: the page says it is everyone's; Vary: Cookie: keyed by the whole header
    return "public" in directives or "cookie" in vary
