"""Cache keys of HTTP responses: the normalised URL, Vary variants, hashed long keys and
the path tags and globs that purge by path (RFC 9111 4.1, 4.4). Pure."""

from __future__ import annotations

import fnmatch
import hashlib
import re
from collections.abc import Iterable
from typing import TYPE_CHECKING
from urllib.parse import quote

from ..core.keys import escape_glob
from .cookies import _COOKIE_VARY, _cookies
from .headers import _split_list

if TYPE_CHECKING:
    from .rules import Request
_MAX_KEY_LENGTH = 200
_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_PATH_UNSAFE = re.compile(r"%[0-9A-Fa-f]{2}|[^A-Za-z0-9\-._~!$&'()*+,;=:@/]")
_QUERY_UNSAFE = re.compile(r"%[0-9A-Fa-f]{2}|[^A-Za-z0-9\-._~!$'()*,;:@/?=]")
_HOST_UNSAFE = re.compile(r"%[0-9A-Fa-f]{2}|[^a-z0-9\-._~!$&'()*+,;=:\[\]]")
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
_DEFAULT_PORTS = {"http": ":80", "https": ":443"}
_TAG_DEPTH = 6  # directory levels url_tags indexes


# -------------------------------------------------------------------------- keys


def _percent_fix(match: re.Match[str]) -> str:
    text = match.group()
    if len(text) == 3:  # "%XX": decode unreserved characters, upper-case the rest
        char = chr(int(text[1:], 16))
        return char if char in _UNRESERVED else text.upper()
    if text == "+":  # only unsafe in queries, where it means a space
        return "%20"
    return quote(text, safe="", errors="surrogatepass")


def _normalise_query(query: str) -> str:
    params: list[tuple[str, str]] = []
    for part in query.split("&"):
        if part:
            name, equals, value = part.partition("=")
            value = _QUERY_UNSAFE.sub(_percent_fix, value)
            params.append((_QUERY_UNSAFE.sub(_percent_fix, name), equals + value))
    params.sort(key=lambda param: param[0])  # stable: repeated names keep their order
    return "&".join(name + rest for name, rest in params)


def _vary_name(name: str) -> str:
    stripped = name.strip()
    # header names are case-insensitive; cookie names (in "cookie=<glob>") are not
    return stripped if stripped.startswith(_COOKIE_VARY) else stripped.lower()


def _vary_names(names: Iterable[str]) -> tuple[str, ...]:
    return tuple(sorted({vary for name in names if (vary := _vary_name(name))}))


def _vary_value(req: Request, name: str) -> str | None:
    if name.startswith(_COOKIE_VARY):
        glob = name[len(_COOKIE_VARY) :]
        found = sorted(f"{n}={v}" for n, v in _cookies(req) if fnmatch.fnmatchcase(n, glob))
        return "; ".join(found) if found else None
    value = req.header(name)
    # Whitespace around list commas carries no meaning (RFC 9111 4.1 allows normalising).
    return None if value is None else ", ".join(_split_list(value))


def _vary_values(req: Request, names: Iterable[str]) -> tuple[str | None, ...]:
    return tuple(_vary_value(req, name) for name in names)


def cache_key(req: Request, vary_names: Iterable[str] = (), prefix: str = "") -> str:
    """The key of the response to `req` among those varying on `vary_names`.

    The key names the GET response whatever `req.method` is (HEAD is served from it,
    see also `invalidation_key`); scheme and host are lower-cased and default ports dropped;
    percent-encoding is normalised; query parameters are sorted by name (repeated
    ones keep their order). A header the request lacks differs from an empty one.
    Keys longer than 200 characters, `prefix` included, become a sha256 (`url_tags`
    keeps them within reach of a path purge).
    """
    scheme = _HOST_UNSAFE.sub(_percent_fix, req.scheme.lower())
    # Only GET responses are stored: HEAD reads GET's entry, unsafe methods invalidate it.
    key = f"GET:{scheme}://{_normal_host(req)}"
    key += _PATH_UNSAFE.sub(_percent_fix, req.path) or "/"
    query = _normalise_query(req.query_string)
    if query:
        key += "?" + query
    names = _vary_names(vary_names)
    if names:
        parts = [
            name + ("!" if value is None else f"={len(value)}:{value}")
            for name, value in zip(names, _vary_values(req, names), strict=True)
        ]
        digest = hashlib.sha256("\n".join(parts).encode("utf-8", "surrogatepass"))
        key += "#" + digest.hexdigest()[:32]
    # The whole user key counts (prefix included): a longer one would be shortened by
    # Cache itself, out of reach of url_tags. Normalised keys are always ASCII.
    if len(prefix) + 5 + len(key) > _MAX_KEY_LENGTH or not key.isascii() or not key.isprintable():
        key = "sha256:" + hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()
    return f"{prefix}http:{key}"


def is_hashed(key: str, prefix: str = "") -> bool:
    """Whether `key` (from `cache_key`) is a digest, which no path glob can match."""
    return key.startswith(f"{prefix}http:sha256:")


def _normal_host(req: Request) -> str:
    scheme = _HOST_UNSAFE.sub(_percent_fix, req.scheme.lower())
    host = (req.host or req.header("host") or "").strip().lower()
    default_port = _DEFAULT_PORTS.get(scheme)
    if default_port is not None and host.endswith(default_port):
        host = host[: -len(default_port)]
    return _HOST_UNSAFE.sub(_percent_fix, host)


def _tag_part(text: str) -> str:
    # a tag names a set key: keep it short whatever the URL (the same text, the same tag)
    if len(text) <= 100:
        return text  # its first character ("/" for a path) keeps the kinds of part apart
    return text[0] + "sha256:" + hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def url_tags(req: Request, prefix: str = "") -> tuple[str, ...]:
    """The tags of an entry stored under a hashed key, so that `path_purge_tag` finds it.

    A digest keeps nothing of the path for a glob to match, and the backend contract
    has no way to list keys; so such an entry is tagged with its exact path and each of
    its directories (``/``, ``/a/``, ``/a/b/``, ... down to six levels), with and
    without its host. A pattern purges the tag of its exact path, or of the directory
    before its first ``*``: everything the pattern matches, and at worst more of the
    long-URL entries under that directory, never less.
    """
    path = _PATH_UNSAFE.sub(_percent_fix, req.path) or "/"
    directories = path[1:].split("/")[:-1][:_TAG_DEPTH]
    parts = [
        _tag_part("/" + "".join(name + "/" for name in directories[:depth]))
        for depth in range(len(directories) + 1)
    ]
    parts.append("|" + _tag_part(path))
    base = f"{prefix}http-path:"
    host = _tag_part(_normal_host(req))
    return tuple(base + where + part for where in ("", host) for part in parts)


def _given_host(host: str) -> str:
    # as written by the caller (a port stays: the scheme is not known here)
    return _HOST_UNSAFE.sub(_percent_fix, host.strip().lower())


def _normal_path_piece(piece: str) -> str:
    return _PATH_UNSAFE.sub(_percent_fix, "/" + piece)[1:]


def path_purge_tag(pattern: str, host: str | None = None, prefix: str = "") -> str:
    """The `url_tags` tag covering every hashed entry whose path may match `pattern`."""
    if not pattern.startswith("/"):
        raise ValueError(f"a path pattern starts with '/', not {pattern!r}")
    # normalised like key paths: "?" and "#" are encoded, so the literal head of the
    # pattern is a prefix of the path of every entry it matches
    path = "/" + "*".join(_normal_path_piece(piece) for piece in pattern[1:].split("*"))
    if "*" not in path:
        part = "|" + _tag_part(path)
    else:
        head = path[: path.index("*")]
        directories = head[1:].split("/")[:-1][:_TAG_DEPTH]
        part = _tag_part("/" + "".join(name + "/" for name in directories))
    where = "" if host is None else _tag_part(_given_host(host))
    return f"{prefix}http-path:{where}{part}"


def path_globs(pattern: str, host: str | None = None, prefix: str = "") -> list[str]:
    """Globs over the (unhashed) keys of the responses whose path matches `pattern`.

    ``*`` matches anything, ``/``, a query string and Vary variants included. Without
    `host`, every host matches. Hashed keys: see `url_tags`.
    """
    if not pattern.startswith("/"):
        raise ValueError(f"a path pattern starts with '/', not {pattern!r}")
    path = "*".join(escape_glob(_normal_path_piece(piece)) for piece in pattern[1:].split("*"))
    host_glob = "*" if host is None else escape_glob(_given_host(host))
    glob = f"{escape_glob(prefix)}http:GET:*://{host_glob}/{path}"
    if glob.endswith("*"):
        return [glob]
    return [glob, glob + "[?#]*"]  # the exact path, then with a query or a variant


def primary_key(req: Request, prefix: str = "") -> str:
    """The first key read for `req`: an entry, or a `VaryMarker` naming the secondary key."""
    return cache_key(req, (), prefix)


def invalidation_key(req: Request, status: int, prefix: str = "") -> str | None:
    """The key to delete after `req`, or None.

    RFC 9111 4.4: a non-error response to an unsafe method (POST, PUT, DELETE, ...)
    invalidates the stored responses for its URI. Deleting the primary key drops an
    entry, or the Vary marker that leads to every variant.
    """
    if req.method.upper() in _SAFE_METHODS or not 200 <= status < 400:
        return None
    return primary_key(req, prefix)
