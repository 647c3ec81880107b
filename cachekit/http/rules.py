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

import hashlib
import math
from collections.abc import Iterable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import Literal

from .cookies import (
    _COOKIE_VARY,
    _cookie_vary_names,
    _shared_with_cookies,
    cookie_globs,
    identifying_cookies,
)
from .entries import CachedResponse, VaryMarker, load
from .headers import (
    _delta_seconds,
    _etag_matches,
    _header_index,
    _http_date,
    _sf_string_or_token,
    _split_list,
    parse_cache_control,
)
from .keys import (
    _vary_names,
    _vary_values,
    cache_key,
    invalidation_key,
    is_hashed,
    path_globs,
    path_purge_tag,
    primary_key,
    url_tags,
)

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
# The RFC 9211 fwd values this module reports when a request goes to the application.
Fwd = Literal["bypass", "method", "uri-miss", "vary-miss", "miss", "request", "stale"]
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
    """The response to send from `entry`: Age and Cache-Status added, 304 or HEAD answered.

    An entry stored per `vary_cookies` value is sent with ``Vary: Cookie`` (merged into
    its Vary, which keys it by those cookies only): a cache downstream (a CDN, a
    browser) that does not know them must not hand one variant to every requester."""
    age = entry.age(now)
    status_value = f"{_sf_string_or_token(cache_name)}; hit; ttl={math.floor(entry.lifetime - age)}"
    added = (("Age", str(int(age))), ("Cache-Status", status_value))
    headers = entry.headers
    if any(name.startswith(_COOKIE_VARY) for name in entry.vary_names):
        headers = tuple(add_vary(headers, ("Cookie",)))
    if _not_modified(entry, req):
        keep = _NOT_MODIFIED_KEEP if entry.etag else _NOT_MODIFIED_KEEP | {"last-modified"}
        kept = tuple(pair for pair in headers if pair[0].lower() in keep)
        return Response(304, kept + added, b"")
    body = b"" if req.method.upper() == "HEAD" else entry.body
    return Response(entry.status, headers + added, body)


def mark_miss(
    headers: Iterable[tuple[str, str]],
    stored: bool,
    fwd: Fwd = "miss",
    *,
    policy: HttpCachePolicy = DEFAULT_POLICY,
    etag: str | None = None,
) -> list[tuple[str, str]]:
    """Headers to send on a forwarded request: the tag header removed, `etag` added if
    the response lacks one, ``Vary: Cookie`` added under `policy.vary_cookies` (see
    `serve`), and `Cache-Status: <name>; fwd=<fwd>[; stored]` appended."""
    tag_header = policy.tag_header.lower()
    sent = [(name, value) for name, value in headers if name.lower() != tag_header]
    if policy.vary_cookies:  # the page may depend on cookies: tell caches downstream
        sent = add_vary(sent, ("Cookie",))
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
