"""HTTP response caching as a shared cache (RFC 9111), reporting Cache-Status (RFC 9211).

Pure functions over plain values and a clock: no I/O and no web framework. The
Starlette, Flask and Django adapters translate their objects into `Request` and
`Response` (header values are `str`; decode raw bytes as latin-1) and drive this
module with their own sync or async backend calls::

    step = begin(request, policy)
    while isinstance(step, Read):             # one read; a second only after a Vary marker
        step = step.feed(backend.get(step.key), now())
    if isinstance(step, Hit):
        return step.response
    sent, store = step.finish(call_the_app(), now())   # step is a Forward (identity=:
                                                       # the session/user the app read)
    if store is not None:
        for key, data, ttl in store.writes():
            backend.set(key, data, ttl)                 # tagged with store.entry.tags
    return sent

How Vary works: a response without Vary is stored under `primary_key(request)`. A
response with Vary stores a small `VaryMarker` (the header names) under the primary
key and the entry under `cache_key(request, names)`, so only responses that vary cost
a second read. Streaming adapters may call `store_precheck` on the status and headers
before buffering a body. Keys too long to stay readable are hashed; their entries carry
`url_tags`, so a path purge (`path_globs` plus `path_purge_tag`) still reaches them.

Who the requester is: a request with `Authorization` is served and stored only responses
RFC 9111 3.5 allows; one with a cookie that may identify its sender
(`identifying_cookies`: any but the policy's `ignore_cookies` and `vary_cookies`) only
responses that say ``public`` or vary on ``Cookie``, whatever the handler read: nothing
outside a handler can see every way it reads a cookie. `vary_cookies` key variants by
those cookies' values (the vary name ``cookie=<glob>``, through the same Vary marker).
What the adapters do see the application read (a session, a user) is an `Identity`.
"""

from __future__ import annotations

import calendar
import fnmatch
import hashlib
import math
import re
import struct
from collections.abc import Iterable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from email.utils import parsedate_tz
from typing import Literal
from urllib.parse import quote

import orjson

from ..core.keys import escape_glob
from ..exceptions import ConfigurationError

__all__ = [
    "DEFAULT_POLICY",
    "CachedResponse",
    "Forward",
    "Fwd",
    "Hit",
    "HttpCachePolicy",
    "Identity",
    "Read",
    "Request",
    "RequestDecision",
    "Response",
    "StoreDecision",
    "VaryMarker",
    "add_vary",
    "apply_identity",
    "begin",
    "cache_key",
    "cookie_globs",
    "identifying_cookies",
    "invalidation_key",
    "is_hashed",
    "load",
    "mark_miss",
    "miss_reason",
    "parse_cache_control",
    "path_globs",
    "path_purge_tag",
    "primary_key",
    "request_is_cacheable",
    "serve",
    "storable",
    "store_precheck",
    "url_tags",
]

Headers = tuple[tuple[str, str], ...]
# The RFC 9211 fwd values this module reports when a request goes to the application.
Fwd = Literal["bypass", "method", "uri-miss", "vary-miss", "miss", "request", "stale"]

_ENTRY_MAGIC = b"CKH1"
_MARKER_MAGIC = b"CKV1"
_LENGTH = struct.Struct(">I")
_META_FIELDS: tuple[str, ...] = ("status", "headers", "stored_at", "lifetime", "initial_age")
_META_FIELDS += ("tags", "vary_names", "vary_values", "etag", "last_modified")
_MAX_KEY_LENGTH = 200
_MAX_DELTA = 2**31  # RFC 9111 1.2.2: larger delta-seconds are taken as 2^31
_NEVER_STORED = frozenset({206, 304})  # partial and not-modified responses are never complete
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "transfer-encoding",
        "te",
        "trailer",
        "upgrade",
        "proxy-authenticate",
        "proxy-authorization",
    }
)
# RFC 9110 15.4.5: what a 304 carries (Last-Modified is added when there is no ETag).
_NOT_MODIFIED_KEEP = frozenset(
    {"cache-control", "content-location", "date", "etag", "expires", "vary"}
)
_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_PATH_UNSAFE = re.compile(r"%[0-9A-Fa-f]{2}|[^A-Za-z0-9\-._~!$&'()*+,;=:@/]")
_QUERY_UNSAFE = re.compile(r"%[0-9A-Fa-f]{2}|[^A-Za-z0-9\-._~!$'()*,;:@/?=]")
_HOST_UNSAFE = re.compile(r"%[0-9A-Fa-f]{2}|[^a-z0-9\-._~!$&'()*+,;=:\[\]]")
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
_DEFAULT_PORTS = {"http": ":80", "https": ":443"}
_TAG_DEPTH = 6  # directory levels url_tags indexes
_SF_TOKEN = re.compile(r"[A-Za-z*][!#$%&'*+\-.^_`|~:/0-9A-Za-z]*")


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


def _header_index(headers: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Lower-cased names to values, repeated fields joined with ", " (RFC 9110 5.3)."""
    index: dict[str, str] = {}
    for name, value in headers:
        key = name.lower()
        index[key] = f"{index[key]}, {value}" if key in index else value
    return index


@dataclass(frozen=True, slots=True)
class Request:
    """What the cache needs from a request. `host` falls back to the Host header."""

    method: str
    scheme: str
    host: str
    path: str
    query_string: str = ""  # raw, without the "?"
    headers: Sequence[tuple[str, str]] | Mapping[str, str] = ()
    _index: dict[str, str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        pairs = self.headers.items() if isinstance(self.headers, Mapping) else self.headers
        object.__setattr__(self, "_index", _header_index(pairs))

    def header(self, name: str) -> str | None:
        """The field's combined value, or None when the request lacks it."""
        return self._index.get(name.lower())


@dataclass(frozen=True, slots=True)
class Response:
    """A response to send, or the application's response to consider storing."""

    status: int
    headers: Sequence[tuple[str, str]] = ()
    body: bytes = b""

    def header(self, name: str) -> str | None:
        return _header_index(self.headers).get(name.lower())


@dataclass(frozen=True, slots=True)
class HttpCachePolicy:
    default_ttl: float | None = 60.0  # used when the response gives no freshness; None: don't store
    cacheable_statuses: AbstractSet[int] = frozenset({200})
    max_body_size: int = 1 << 20
    methods: AbstractSet[str] = frozenset({"GET", "HEAD"})
    key_prefix: str = ""
    etag_from_body: bool = False
    tag_header: str = "Cache-Tag"
    private_ok: bool = False
    cache_name: str = "cachekit"
    # Cookie name globs (fnmatch, case-sensitive) that tell no users apart (analytics,
    # consent): a request carrying only these is served shared pages. Any other cookie
    # makes the request private unless the page says `public` (see `identifying_cookies`).
    ignore_cookies: tuple[str, ...] = ()
    # Cookie name globs whose values select a variant: pages are stored per value of these
    # (a language, a theme), and they don't make a request private.
    vary_cookies: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "cacheable_statuses", frozenset(self.cacheable_statuses))
        object.__setattr__(self, "methods", frozenset(m.upper() for m in self.methods))
        object.__setattr__(self, "ignore_cookies", cookie_globs(self.ignore_cookies))
        object.__setattr__(self, "vary_cookies", cookie_globs(self.vary_cookies))


DEFAULT_POLICY = HttpCachePolicy()


@dataclass(frozen=True, slots=True)
class CachedResponse:
    """A stored response. Its age is `initial_age` plus the time since `stored_at`."""

    status: int
    headers: Headers
    body: bytes
    stored_at: float
    lifetime: float  # freshness lifetime in seconds (RFC 9111 4.2.1)
    initial_age: float = 0.0  # corrected_initial_age (RFC 9111 4.2.3)
    tags: tuple[str, ...] = ()
    vary_names: tuple[str, ...] = ()
    vary_values: tuple[str | None, ...] = ()  # the request's values; None: header absent
    etag: str | None = None
    last_modified: float | None = None  # unix time

    def age(self, now: float) -> float:
        return self.initial_age + max(0.0, now - self.stored_at)

    def ttl(self, now: float) -> float:
        """Remaining freshness in seconds; <= 0 when stale."""
        return self.lifetime - self.age(now)

    def to_bytes(self) -> bytes:
        # Metadata as one orjson array, then the body raw: no base64 on the hit path.
        meta = orjson.dumps([getattr(self, name) for name in _META_FIELDS])
        return b"".join((_ENTRY_MAGIC, _LENGTH.pack(len(meta)), meta, self.body))

    @classmethod
    def from_bytes(cls, data: bytes) -> CachedResponse:
        """Decode `to_bytes` output; raises ValueError on anything else."""
        if data[:4] != _ENTRY_MAGIC or len(data) < 8:
            raise ValueError("not a cachekit HTTP entry")
        (size,) = _LENGTH.unpack_from(data, 4)
        meta = orjson.loads(data[8 : 8 + size])
        if not isinstance(meta, list) or len(meta) != 10:
            raise ValueError("corrupt cachekit HTTP entry")
        status, headers, stored_at, lifetime, initial_age, tags, names, values, etag, lm = meta
        if not (
            isinstance(status, int)
            and isinstance(headers, list)
            and all(isinstance(x, float | int) for x in (stored_at, lifetime, initial_age))
            and isinstance(values, list)
            and all(isinstance(v, str | None) for v in values)
            and isinstance(etag, str | None)
            and isinstance(lm, float | int | None)
        ):
            raise ValueError("corrupt cachekit HTTP entry")
        pairs = tuple((name, value) for name, value in headers)
        if not all(isinstance(name, str) and isinstance(value, str) for name, value in pairs):
            raise ValueError("corrupt cachekit HTTP entry")
        return cls(
            status,
            pairs,
            bytes(data[8 + size :]),
            float(stored_at),
            float(lifetime),
            float(initial_age),
            _strings(tags),
            _strings(names),
            tuple(values),
            etag,
            None if lm is None else float(lm),
        )


def _strings(value: object) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ValueError("corrupt cachekit HTTP entry")
    return tuple(value)


@dataclass(frozen=True, slots=True)
class VaryMarker:
    """Stored under the primary key when responses vary: which request headers select."""

    names: tuple[str, ...]

    def variant_key(self, req: Request, prefix: str = "") -> str:
        return cache_key(req, self.names, prefix)

    def to_bytes(self) -> bytes:
        return _MARKER_MAGIC + orjson.dumps(self.names)

    @classmethod
    def from_bytes(cls, data: bytes) -> VaryMarker:
        if data[:4] != _MARKER_MAGIC:
            raise ValueError("not a cachekit Vary marker")
        return cls(_strings(orjson.loads(data[4:])))


def load(data: bytes | None) -> CachedResponse | VaryMarker | None:
    """Decode what a backend returned; None for a miss or a corrupt value (never raises)."""
    if not data:
        return None
    try:
        if data[:4] == _MARKER_MAGIC:
            return VaryMarker.from_bytes(data)
        return CachedResponse.from_bytes(data)
    except (ValueError, TypeError, struct.error):
        return None


# ------------------------------------------------------------------ header parsing


def _split_list(value: str) -> list[str]:
    """Split a comma-separated field value; commas inside quoted strings don't split."""
    if '"' not in value:
        parts = value.split(",")
    else:
        parts, start, quoted, escaped = [], 0, False, False
        for i, char in enumerate(value):
            if escaped:
                escaped = False
            elif quoted and char == "\\":
                escaped = True
            elif char == '"':
                quoted = not quoted
            elif char == "," and not quoted:
                parts.append(value[start:i])
                start = i + 1
        parts.append(value[start:])
    return [stripped for part in parts if (stripped := part.strip())]


def parse_cache_control(value: str | None) -> dict[str, str | None]:
    """Directives by lower-cased name; a directive without argument maps to None.

    Quoted arguments are unquoted; the first of duplicate directives wins (RFC 9111
    4.2.1). Never raises. Numbers are checked where they are used, not here.
    """
    directives: dict[str, str | None] = {}
    for item in _split_list(value or ""):
        name, equals, argument = item.partition("=")
        name = name.strip().lower()
        if not name or name in directives:
            continue
        argument = argument.strip()
        if len(argument) >= 2 and argument[0] == argument[-1] == '"':
            argument = re.sub(r"\\(.)", r"\1", argument[1:-1], flags=re.DOTALL)
        directives[name] = argument if equals else None
    return directives


def _delta_seconds(value: str | None) -> int | None:
    """A delta-seconds value, or None when absent or not a plain non-negative integer."""
    if value is None or not value.isascii() or not value.isdigit():
        return None
    return _MAX_DELTA if len(value) > 10 else min(int(value), _MAX_DELTA)


def _http_date(value: str | None) -> float | None:
    """An HTTP-date as unix time, or None when absent or invalid."""
    if not value:
        return None
    try:
        parts = parsedate_tz(value)
        if parts is None:
            return None
        return float(calendar.timegm(parts[:6]) - (parts[9] or 0))  # no zone: GMT
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def _opaque_tag(tag: str) -> str:
    return tag[2:] if tag.startswith("W/") else tag


def _etag_matches(if_none_match: str, etag: str | None) -> bool:
    """If-None-Match evaluation with weak comparison (RFC 9110 13.1.2)."""
    members = _split_list(if_none_match)
    if "*" in members:
        return True
    if etag is None:
        return False
    opaque = _opaque_tag(etag)
    return any(_opaque_tag(member) == opaque for member in members)


def _sf_string_or_token(name: str) -> str:
    if _SF_TOKEN.fullmatch(name):
        return name
    printable = "".join(c if " " <= c <= "~" else "?" for c in name)
    return '"' + printable.replace("\\", "\\\\").replace('"', '\\"') + '"'


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


# ----------------------------------------------------------------------- requests


@dataclass(frozen=True, slots=True)
class RequestDecision:
    lookup: bool  # may be answered from the cache
    store: bool  # its response may be stored
    fwd: Fwd  # reported if the request goes to the application


def request_is_cacheable(req: Request, policy: HttpCachePolicy = DEFAULT_POLICY) -> RequestDecision:
    method = req.method.upper()
    if method not in ("GET", "HEAD"):
        return RequestDecision(False, False, "method")
    if method not in policy.methods:
        return RequestDecision(False, False, "bypass")
    directives = parse_cache_control(req.header("cache-control"))
    may_store = "no-store" not in directives
    if "no-cache" in directives or _delta_seconds(directives.get("max-age")) == 0:
        return RequestDecision(False, may_store, "request")  # revalidate: we can't, so forward
    return RequestDecision(True, may_store, "miss")


def _allows_authorized(directives: Mapping[str, str | None]) -> bool:
    # RFC 9111 3.5: responses to requests with Authorization are shared only with these.
    return any(name in directives for name in ("public", "s-maxage", "must-revalidate"))


def miss_reason(
    entry: CachedResponse, req: Request, now: float, policy: HttpCachePolicy = DEFAULT_POLICY
) -> Fwd | None:
    """None when `entry` may answer `req`; else the RFC 9211 fwd value to report."""
    if entry.vary_names and _vary_values(req, entry.vary_names) != entry.vary_values:
        return "vary-miss"
    if identifying_cookies(req, policy):
        stored_directives = parse_cache_control(_header_index(entry.headers).get("cache-control"))
        if not _shared_with_cookies(stored_directives, entry.vary_names):
            return "bypass"  # a private request: only a page for everyone may answer it
    age = entry.age(now)
    remaining = entry.lifetime - age
    if remaining <= 0:
        return "stale"
    directives = parse_cache_control(req.header("cache-control"))
    if directives:
        max_age = _delta_seconds(directives.get("max-age"))
        min_fresh = _delta_seconds(directives.get("min-fresh"))
        if (
            "no-cache" in directives
            or max_age == 0
            or (max_age is not None and age > max_age)
            or (min_fresh is not None and remaining < min_fresh)
        ):
            return "request"
    if req.header("authorization") is not None:
        stored_directives = parse_cache_control(_header_index(entry.headers).get("cache-control"))
        if not _allows_authorized(stored_directives):
            return "request"
    return None


# ---------------------------------------------------------------------- responses


@dataclass(frozen=True, slots=True)
class Identity:
    """What the application read that tells requesters apart: a session, a signed-in user.

    Adapters that see the application read one say so: `vary` names the request headers
    that carry it (``Cookie``, ``Authorization``); `carried` is true when the request had
    one (a non-empty session, an authenticated user) or the application changed it. A
    response built from an identity the request carried is never stored (a session's
    ``Set-Cookie`` may only be added later, by middleware the cache does not see), unless
    it says ``Cache-Control: public``; one built from an absent identity is stored
    varying on `vary`, so a requester who has one gets an answer of its own.
    """

    vary: tuple[str, ...] = ()
    carried: bool = False


def add_vary(headers: Iterable[tuple[str, str]], names: Iterable[str]) -> list[tuple[str, str]]:
    """`headers` with `names` in their Vary field (once each; ``Vary: *`` is left alone)."""
    pairs = list(headers)
    present = set(_vary_names(_split_list(_header_index(pairs).get("vary", ""))))
    missing = [name for name in dict.fromkeys(names) if name.lower() not in present]
    if not missing or "*" in present:
        return pairs
    for i, (name, value) in enumerate(pairs):
        if name.lower() == "vary":
            pairs[i] = (name, ", ".join([value, *missing]) if value.strip() else ", ".join(missing))
            return pairs
    pairs.append(("Vary", ", ".join(missing)))
    return pairs


def apply_identity(
    headers: Iterable[tuple[str, str]], identity: Identity | None
) -> tuple[list[tuple[str, str]], str | None]:
    """The headers to send once the application read `identity` (Vary added), and why the
    response may then not be stored (None: it may, as far as identity goes)."""
    pairs = list(headers)
    if identity is None or not (identity.vary or identity.carried):
        return pairs, None
    if "public" in parse_cache_control(_header_index(pairs).get("cache-control")):
        return pairs, None  # the application said it is the same for everyone
    return add_vary(pairs, identity.vary), "identity" if identity.carried else None


def store_precheck(
    req: Request,
    status: int,
    headers: Iterable[tuple[str, str]],
    policy: HttpCachePolicy = DEFAULT_POLICY,
    identity: Identity | None = None,
) -> str | None:
    """Why a response can't be stored, judging by its status and headers only; else None."""
    pairs, problem = apply_identity(headers, identity)
    return problem or _header_problem(req, status, _header_index(pairs), policy)


def _header_problem(
    req: Request, status: int, index: Mapping[str, str], policy: HttpCachePolicy
) -> str | None:
    if req.method.upper() != "GET":
        return "method"
    if status not in policy.cacheable_statuses or status in _NEVER_STORED or status < 200:
        return "status"
    if "no-store" in parse_cache_control(req.header("cache-control")):
        return "request no-store"
    directives = parse_cache_control(index.get("cache-control"))
    for directive in ("no-store", "no-cache", "private"):
        if directive in directives and not (directive == "private" and policy.private_ok):
            return directive
    if "*" in _vary_names(_split_list(index.get("vary", ""))):
        return "vary *"
    if "set-cookie" in index:
        return "set-cookie"
    if req.header("authorization") is not None and not _allows_authorized(directives):
        return "authorization"
    if identifying_cookies(req, policy):
        vary = _vary_names(_split_list(index.get("vary", "")))
        if not _shared_with_cookies(directives, vary):
            return "cookie"  # the handler may have read it: not shared unless said so
    length = _delta_seconds(index.get("content-length"))
    if length is not None and length > policy.max_body_size:
        return "too large"
    return None


@dataclass(frozen=True, slots=True)
class StoreDecision:
    key: str  # where `data` goes
    data: bytes  # entry.to_bytes()
    ttl: float  # seconds the entry stays fresh
    entry: CachedResponse
    primary_key: str
    marker: VaryMarker | None  # goes under primary_key when the response varies
    url_tags: tuple[str, ...] = ()  # when a key is hashed: see `url_tags`

    @property
    def tags(self) -> tuple[str, ...]:
        """The tags to write with every key: the response's, then `url_tags`."""
        return self.entry.tags + self.url_tags

    def writes(self) -> list[tuple[str, bytes, int]]:
        """(key, value, ttl in whole seconds) to store, tagged with `entry.tags`."""
        ttl = max(1, math.ceil(self.ttl))  # serve-time checks catch the rounding
        if self.marker is None:
            return [(self.key, self.data, ttl)]
        return [(self.primary_key, self.marker.to_bytes(), ttl), (self.key, self.data, ttl)]


def _freshness_lifetime(
    index: Mapping[str, str], policy: HttpCachePolicy, date: float | None, now: float
) -> float | None:
    """s-maxage, then max-age, then Expires - Date, then the policy's default."""
    directives = parse_cache_control(index.get("cache-control"))
    for name in ("s-maxage", "max-age"):
        seconds = _delta_seconds(directives.get(name))
        if seconds is not None:
            return float(seconds)
    if "expires" in index:
        expires = _http_date(index["expires"])  # an invalid one means expired (RFC 9111 5.3)
        return 0.0 if expires is None else expires - (now if date is None else date)
    return policy.default_ttl


def storable(
    req: Request,
    resp: Response,
    policy: HttpCachePolicy,
    now: float,
    *,
    request_time: float | None = None,
) -> StoreDecision | str:
    """What to store for `resp`, or why it is not stored.

    `now` is when the response arrived; `request_time`, when the request was sent on
    (default: `now`), for the Age correction of RFC 9111 4.2.3.
    """
    index = _header_index(resp.headers)
    problem = _header_problem(req, resp.status, index, policy)
    if problem is not None:
        return problem
    if len(resp.body) > policy.max_body_size:
        return "too large"
    date = _http_date(index.get("date"))
    lifetime = _freshness_lifetime(index, policy, date, now)
    if lifetime is None:
        return "no freshness"
    ages = _split_list(index.get("age", ""))
    age_value = (_delta_seconds(ages[0]) if ages else None) or 0
    apparent_age = 0.0 if date is None else max(0.0, now - date)
    response_delay = 0.0 if request_time is None else max(0.0, now - request_time)
    initial_age = max(apparent_age, age_value + response_delay)
    ttl = lifetime - initial_age
    if ttl <= 0:
        return "stale"

    drop = _HOP_BY_HOP | {"age", "content-length", policy.tag_header.lower()}
    drop |= {name.lower() for name in _split_list(index.get("connection", ""))}
    headers = [(name, value) for name, value in resp.headers if name.lower() not in drop]
    if resp.status != 204:  # the body is whole now, whatever the framing was
        headers.append(("Content-Length", str(len(resp.body))))
    etag = index.get("etag")
    if etag is None and policy.etag_from_body:
        etag = '"' + hashlib.blake2b(resp.body, digest_size=16).hexdigest() + '"'
        headers.append(("ETag", etag))
    tags = dict.fromkeys(_split_list(index.get(policy.tag_header.lower(), "")))
    names = _vary_names([*_split_list(index.get("vary", "")), *_cookie_vary_names(policy)])
    entry = CachedResponse(
        resp.status,
        tuple(headers),
        bytes(resp.body),
        now,
        lifetime,
        initial_age,
        tuple(tags),
        names,
        _vary_values(req, names),
        etag,
        _http_date(index.get("last-modified")),
    )
    try:
        data = entry.to_bytes()
    except TypeError:  # orjson refuses lone surrogates in header values
        return "unserialisable"
    prefix = policy.key_prefix
    primary = primary_key(req, prefix)
    key = cache_key(req, names, prefix) if names else primary
    hashed = is_hashed(primary, prefix) or is_hashed(key, prefix)
    return StoreDecision(
        key,
        data,
        ttl,
        entry,
        primary,
        VaryMarker(names) if names else None,
        url_tags(req, prefix) if hashed else (),
    )


def _not_modified(entry: CachedResponse, req: Request) -> bool:
    # RFC 9110 13.2.1: preconditions apply only where the response would be 2xx.
    if not 200 <= entry.status < 300:
        return False
    if_none_match = req.header("if-none-match")
    if if_none_match is not None:  # takes precedence over If-Modified-Since
        return _etag_matches(if_none_match, entry.etag)
    since = _http_date(req.header("if-modified-since"))
    if since is None:
        return False
    modified = entry.last_modified
    if modified is None:  # RFC 9111 4.3.2: else Date, else when it was stored
        modified = _http_date(_header_index(entry.headers).get("date"))
    if modified is None:
        modified = entry.stored_at
    return modified <= since


def serve(
    entry: CachedResponse, req: Request, now: float, cache_name: str = "cachekit"
) -> Response:
    """The response to send from `entry`: Age and Cache-Status added, 304 or HEAD answered."""
    age = entry.age(now)
    status_value = f"{_sf_string_or_token(cache_name)}; hit; ttl={math.floor(entry.lifetime - age)}"
    added = (("Age", str(int(age))), ("Cache-Status", status_value))
    if _not_modified(entry, req):
        keep = _NOT_MODIFIED_KEEP if entry.etag else _NOT_MODIFIED_KEEP | {"last-modified"}
        kept = tuple(pair for pair in entry.headers if pair[0].lower() in keep)
        return Response(304, kept + added, b"")
    body = b"" if req.method.upper() == "HEAD" else entry.body
    return Response(entry.status, entry.headers + added, body)


def mark_miss(
    headers: Iterable[tuple[str, str]],
    stored: bool,
    fwd: Fwd = "miss",
    *,
    policy: HttpCachePolicy = DEFAULT_POLICY,
    etag: str | None = None,
) -> list[tuple[str, str]]:
    """Headers to send on a forwarded request: the tag header removed, `etag` added if
    the response lacks one, and `Cache-Status: <name>; fwd=<fwd>[; stored]` appended."""
    tag_header = policy.tag_header.lower()
    sent = [(name, value) for name, value in headers if name.lower() != tag_header]
    if etag is not None and not any(name.lower() == "etag" for name, _ in sent):
        sent.append(("ETag", etag))
    value = f"{_sf_string_or_token(policy.cache_name)}; fwd={fwd}"
    sent.append(("Cache-Status", value + "; stored" if stored else value))
    return sent


# ----------------------------------------------------------- the lookup, sans I/O


@dataclass(frozen=True, slots=True)
class Hit:
    response: Response
    entry: CachedResponse


@dataclass(frozen=True, slots=True)
class Forward:
    """Call the application, then pass its response to `finish`."""

    request: Request
    policy: HttpCachePolicy
    fwd: Fwd
    may_store: bool

    def finish(
        self,
        resp: Response,
        now: float,
        request_time: float | None = None,
        identity: Identity | None = None,
    ) -> tuple[Response, StoreDecision | None]:
        """The response to send, and what to store (None: nothing). `identity`: what the
        application read that tells requesters apart (see `Identity`)."""
        headers, problem = apply_identity(resp.headers, identity)
        if identity is not None:
            resp = Response(resp.status, tuple(headers), resp.body)
        decision = (
            storable(self.request, resp, self.policy, now, request_time=request_time)
            if self.may_store and problem is None
            else None
        )
        store = decision if isinstance(decision, StoreDecision) else None
        headers = mark_miss(
            resp.headers,
            store is not None,
            self.fwd,
            policy=self.policy,
            etag=None if store is None else store.entry.etag,
        )
        return Response(resp.status, tuple(headers), resp.body), store


@dataclass(frozen=True, slots=True)
class Read:
    """Read `key` from the backend and `feed` the result (None when absent)."""

    key: str
    request: Request
    policy: HttpCachePolicy
    may_store: bool
    variant: bool = False  # reading the secondary key named by a Vary marker

    def feed(self, data: bytes | None, now: float) -> Read | Hit | Forward:
        found = load(data)
        if isinstance(found, VaryMarker) and not self.variant:
            key = found.variant_key(self.request, self.policy.key_prefix)
            return Read(key, self.request, self.policy, self.may_store, variant=True)
        if not isinstance(found, CachedResponse):
            fwd: Fwd = "vary-miss" if self.variant else "uri-miss"
            return Forward(self.request, self.policy, fwd, self.may_store)
        reason = miss_reason(found, self.request, now, self.policy)
        if reason is not None:
            return Forward(self.request, self.policy, reason, self.may_store)
        return Hit(serve(found, self.request, now, self.policy.cache_name), found)


def begin(req: Request, policy: HttpCachePolicy = DEFAULT_POLICY) -> Read | Forward:
    """The first step for a request: a primary-key read, or straight to the application."""
    decision = request_is_cacheable(req, policy)
    if not decision.lookup:
        return Forward(req, policy, decision.fwd, decision.store)
    return Read(primary_key(req, policy.key_prefix), req, policy, decision.store)
