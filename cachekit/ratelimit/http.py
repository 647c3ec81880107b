"""Rate limits for HTTP requests, framework-neutral: the adapters
(``cachekit.integrations.{starlette,flask,django}.ratelimit``) translate their request
and response objects; what is decided (the identity, admitted or not, the headers, the
429) is decided here.

The identity is a function of the request (``key=``), by default the client's address:
the connection's peer, and ``X-Forwarded-For`` only when the peer is one of the
``trusted_proxies`` (then read from the right, see :func:`~.rules.client_address`). A key
function returning None leaves the request unlimited (health checks, staff).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from ..exceptions import ConfigurationError
from ._limiter import RateLimiter
from .rules import Decision, Rate, client_address, rate_limit_headers, trusted_networks

if TYPE_CHECKING:
    from .._cache import Cache

__all__ = ["OPTIONS", "TOO_MANY_REQUESTS_BODY", "HttpRateLimit", "checked_settings"]

TOO_MANY_REQUESTS_BODY = b"Too Many Requests"
OPTIONS = frozenset(
    {"name", "key", "cost", "burst", "algorithm", "on_error", "trusted_proxies", "headers",
     "legacy_headers"}
)  # fmt: skip
"""The options of :class:`HttpRateLimit`, which every adapter takes."""


def checked_settings(
    given: Mapping[str, Any] | None, where: str, own: Iterable[str] = ()
) -> dict[str, Any]:
    """A framework's rate-limit settings (``OPTIONS`` and the adapter's ``own`` names), as
    a dict; an unknown name is a :class:`~cachekit.ConfigurationError` listing the known."""
    given = given or {}
    known = OPTIONS | frozenset(own)
    unknown = set(given) - known
    if unknown:
        raise ConfigurationError(
            f"{where}: unknown {', '.join(sorted(unknown))} (known: {', '.join(sorted(known))})"
        )
    return dict(given)


RequestT = TypeVar("RequestT")


class HttpRateLimit(Generic[RequestT]):
    """One limit over requests: ``rate`` per identity (``key(request)``, default the
    client's address), ``cost`` units per request, headers on every answer (``headers``;
    ``legacy_headers`` adds ``X-RateLimit-*``). ``name`` is the limiter's name and the
    policy's name in the ``RateLimit`` headers."""

    def __init__(
        self,
        cache: Cache,
        rate: str | Rate | tuple[int, float],
        *,
        name: str = "http",
        key: Callable[[RequestT], Any] | None = None,
        cost: int = 1,
        burst: int | None = None,
        algorithm: str = "gcra",
        on_error: str = "allow",
        trusted_proxies: Iterable[str] | str | None = None,
        headers: bool = True,
        legacy_headers: bool = False,
    ) -> None:
        self.limiter = RateLimiter(
            cache, name, rate, burst=burst, algorithm=algorithm, on_error=on_error
        )
        self.cost = self.limiter.rule.check_cost(cost)
        self.key = key
        self.networks = trusted_networks(trusted_proxies)
        self.send_headers = headers
        self.legacy_headers = legacy_headers

    def client(self, peer: str | None, forwarded_for: Sequence[str]) -> str:
        """The default identity: the client's address (see the module docs)."""
        return client_address(peer, forwarded_for, self.networks)

    def identity(
        self, request: RequestT, peer: str | None, forwarded_for: Callable[[], Sequence[str]]
    ) -> Any:
        """``key(request)``, or the client's address; None: not limited."""
        if self.key is not None:
            return self.key(request)
        return self.client(peer, forwarded_for() if self.networks else ())

    def decide(self, identity: Any) -> Decision:
        return self.limiter.hit(identity, self.cost)

    async def adecide(self, identity: Any) -> Decision:
        return await self.limiter.ahit(identity, self.cost)

    def headers(self, decision: Decision) -> list[tuple[str, str]]:
        """The headers to add to a response (the 429's include ``Retry-After``)."""
        if not self.send_headers:
            if decision.allowed:
                return []
            return [
                h for h in rate_limit_headers(decision, self.limiter.rule) if h[0] == "Retry-After"
            ]
        return rate_limit_headers(
            decision, self.limiter.rule, self.limiter.name, self.legacy_headers
        )

    def refusal(self, decision: Decision) -> tuple[int, list[tuple[str, str]], bytes]:
        """The 429 answer: status, headers, body."""
        headers = [("Content-Type", "text/plain; charset=utf-8"), *self.headers(decision)]
        return 429, headers, TOO_MANY_REQUESTS_BODY
