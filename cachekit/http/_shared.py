"""What the sync and async HTTP cache drivers share, written once, by hand.

The drivers themselves (``cachekit/http/_async_driver.py`` and the ``_sync_driver.py``
twin generated from it) read and write :mod:`cachekit.http.rules`' bytes through a
:class:`cachekit.Cache` and coalesce cold requests. Here: the entry cache they use
(:func:`bytes_cache`), their common state and the pure part of invalidation (keys and
globs for a URL, a path pattern, a tag), and the callable types of both worlds (the
async source names the ``Async…`` ones, the sync twin the others). No web framework is
imported here.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, TypedDict, TypeVar
from urllib.parse import urlsplit

from .._cache import Cache
from .rules import (
    CachedResponse,
    Forward,
    Hit,
    HttpCachePolicy,
    Request,
    Response,
    path_globs,
    path_purge_tag,
    primary_key,
)

__all__ = [
    "CoalesceOptions",
    "HttpCache",
    "HttpCacheOptions",
    "PagePolicyOptions",
    "PolicyOptions",
    "bytes_cache",
    "split_options",
]

T = TypeVar("T")
Decided = Callable[[CachedResponse | None], None]
AsyncDecided = Callable[[CachedResponse | None], Awaitable[None]]
HitHandler = Callable[[Response], T]
AsyncHitHandler = Callable[[Response], Awaitable[T]]
Forwarder = Callable[[Forward, Decided], T]
AsyncForwarder = Callable[[Forward, AsyncDecided], Awaitable[T]]
Probe = tuple[Hit | Forward, str | None, int]  # probe(): step, key read, flights landed
_PROBE = b"\x00\xffcachekit" * 64


def _stores_bytes(cache: Cache) -> bool:
    """Whether ``cache`` keeps bytes exactly and compactly (not base64 inside JSON)."""
    serializer = cache.serializer
    if serializer is None:  # the memory backend keeps objects as they are
        return True
    try:
        data = serializer.dumps(_PROBE)
        return len(data) <= len(_PROBE) + 64 and bool(serializer.loads(data) == _PROBE)
    except Exception:
        return False


def bytes_cache(cache: Cache) -> Cache:
    """A cache that stores HTTP entries (bytes) in ``cache``'s backend and namespace.

    ``cache`` itself when it keeps bytes as they are, give or take a header (memory, or
    a ``raw``, ``msgpack`` or signed ``pickle`` serializer); otherwise (``orjson``,
    ``json``, ...: bytes are base64 in JSON, or refused) a sibling over the same backend
    objects and namespace with the ``raw`` serializer, so a hit is still one ``GET`` of
    the entry as it is, and tags and ``clear()`` still cover the entries.
    """
    if _stores_bytes(cache):
        return cache
    return cache.with_options(serializer="raw")


class CoalesceOptions(TypedDict, total=False):
    """How cold requests coalesce: :class:`HttpCache`'s keyword arguments, typed once for
    the signatures passing them on (``**options: Unpack[CoalesceOptions]``); their
    defaults are :class:`HttpCache`'s."""

    lock: bool | None
    lock_ttl: float
    wait_timeout: float
    coalesce: bool


class PagePolicyOptions(TypedDict, total=False):
    """The :class:`~cachekit.http.HttpCachePolicy` fields an adapter takes as keywords
    (``make_policy``), its defaults those of the policy, but for ``key_prefix`` (in
    :class:`PolicyOptions`): Django's ``cache_page`` has a ``key_prefix`` of its own
    (its cache key's), so it takes these."""

    cacheable_statuses: Iterable[int]
    max_body_size: int
    methods: Iterable[str]
    etag_from_body: bool
    tag_header: str
    private_ok: bool
    cache_name: str
    ignore_cookies: Iterable[str]
    vary_cookies: Iterable[str]


class PolicyOptions(PagePolicyOptions, total=False):
    """Every :class:`~cachekit.http.HttpCachePolicy` field an adapter takes as keywords;
    ``default_ttl`` is the adapter's ``ttl``."""

    key_prefix: str


class HttpCacheOptions(PolicyOptions, CoalesceOptions, total=False):
    """The keyword options of an HTTP cache adapter: the policy's and the coalescing."""


COALESCE_OPTIONS: frozenset[str] = CoalesceOptions.__optional_keys__


def split_options(options: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """An adapter's options as the policy's (for ``make_policy``) and the coalescing
    ones (for :class:`HttpCache`)."""
    policy = {k: v for k, v in options.items() if k not in COALESCE_OPTIONS}
    return policy, {k: v for k, v in options.items() if k in COALESCE_OPTIONS}


class HttpCache:
    """State and invalidation shared by the sync and async drivers.

    ``coalesce``: concurrent requests for a cold key wait for one of them (single-flight
    in this process); False: each calls the app. ``lock``: also coalesce across
    processes with ``cache.lock`` (default: when the cache has locks and a remote
    backend). ``lock_ttl`` bounds how long a crashed leader blocks others;
    ``wait_timeout`` how long a follower waits before calling the app itself.
    """

    def __init__(
        self,
        cache: Cache,
        policy: HttpCachePolicy,
        *,
        lock: bool | None = None,
        lock_ttl: float = 30.0,
        wait_timeout: float = 10.0,
        coalesce: bool = True,
    ) -> None:
        self.user_cache = cache
        self.cache = bytes_cache(cache)
        self.policy = policy
        has_lock = callable(getattr(self.cache, "lock", None))
        self.use_lock = has_lock and self.cache.shared if lock is None else bool(lock) and has_lock
        self.use_lock = self.use_lock and coalesce
        self.coalesce = coalesce
        self.lock_ttl = lock_ttl
        self.wait_timeout = wait_timeout
        self.lock_waits = 0  # times a request blocked on another's cross-process lock

    def followers(self) -> int:
        """How many requests are waiting for another one's response right now."""
        return sum(flight.waiters for flight in self._all_flights())

    def _all_flights(self) -> list[Any]:
        raise NotImplementedError

    def _circuit_open(self) -> bool:
        return bool(self.cache.stats().get("circuit") == "open")

    # -- invalidation: the pure part -----------------------------------------------
    def url_key(self, url: str) -> str:
        """The cache key of the GET response for an absolute URL (``https://h/p?q``)."""
        parts = urlsplit(url)
        if not parts.scheme or not parts.netloc:
            raise ValueError(f"invalidate_url needs an absolute URL, not {url!r}")
        req = Request("GET", parts.scheme, parts.netloc, parts.path or "/", parts.query)
        return primary_key(req, self.policy.key_prefix)

    def path_globs(self, pattern: str, host: str | None = None) -> list[str]:
        """Globs over the cache keys for a path pattern (``*`` matches anything, including
        ``/``, a query string and Vary variants). Without ``host``, every host matches."""
        return path_globs(pattern, host, self.policy.key_prefix)

    def path_tag(self, pattern: str, host: str | None = None) -> str:
        """The tag of the entries with hashed keys (long URLs) the pattern may cover."""
        return path_purge_tag(pattern, host, self.policy.key_prefix)

    def _tags_method(self, name: str) -> Callable[..., Any]:
        method = getattr(self.cache, name, None)
        if method is None:
            raise NotImplementedError(
                "invalidation by tag needs Cache.invalidate_tags, which this cachekit lacks"
            )
        return method  # type: ignore[no-any-return]
