"""Rate limits for HTTP requests, framework-neutral: the adapters
(``cachekit.integrations.{starlette,flask,django}.ratelimit``) translate their request
and response objects; what is decided (the identity, admitted or not, the headers, the
429) is decided here.

The identity is a function of the request (``key=``), by default the client's address:
the connection's peer, and ``X-Forwarded-For`` only when the peer is one of the
``trusted_proxies`` (then read from the right, see :func:`~.rules.client_address`). A key
function returning None leaves the request unlimited (health checks, staff).

One request's flow, the same in every adapter: :meth:`HttpRateLimit.check` (or
``acheck``) takes the request, the peer's address and a reader of its
``X-Forwarded-For`` values, and returns a :class:`Verdict`: refused (answer with
``verdict.refusal()``, the view does not run) or not (add ``verdict.headers`` to the
view's response). An adapter only reads its request and writes its response.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from ..exceptions import ConfigurationError
from ._limiter import RateLimiter
from .rules import Decision, Rate, client_address, rate_limit_headers, trusted_networks

if TYPE_CHECKING:
    from .._cache import Cache

__all__ = [
    "OPTIONS",
    "TOO_MANY_REQUESTS_BODY",
    "UNLIMITED",
    "HttpRateLimit",
    "Verdict",
    "checked_settings",
    "configured_options",
]

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


def configured_options(settings: Mapping[str, Any], given: Mapping[str, Any]) -> dict[str, Any]:
    """One limit's options: a framework's configured defaults (those of ``OPTIONS``; the
    adapter's own names left out), then the ``given`` ones over them."""
    return {**{k: v for k, v in settings.items() if k in OPTIONS}, **given}


Refusal = tuple[int, list[tuple[str, str]], bytes]
"""An answer: status, headers, body."""


@dataclass(frozen=True)
class Verdict:
    """What to do with one request. ``decision`` None: not limited (the key gave None).
    ``headers``: the rate-limit headers of the answer (a refusal's include
    ``Retry-After``); admitted, they go on the view's response."""

    decision: Decision | None = None
    headers: Sequence[tuple[str, str]] = ()

    @property
    def refused(self) -> bool:
        return self.decision is not None and not self.decision.allowed

    def refusal(self) -> Refusal:
        """The 429 answer (a refused verdict's): status, headers, body."""
        headers = [("Content-Type", "text/plain; charset=utf-8"), *self.headers]
        return 429, headers, TOO_MANY_REQUESTS_BODY


UNLIMITED = Verdict()
"""The verdict on a request the key leaves unlimited: nothing counted, no headers."""


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

    def check(
        self, request: RequestT, peer: str | None, forwarded_for: Callable[[], Sequence[str]]
    ) -> Verdict:
        """One request counted (its identity's hit), and what to answer: a
        :class:`Verdict`. ``forwarded_for()`` is read only when it may be trusted."""
        identity = self.identity(request, peer, forwarded_for)
        if identity is None:
            return UNLIMITED
        return self.verdict(self.decide(identity))

    async def acheck(
        self, request: RequestT, peer: str | None, forwarded_for: Callable[[], Sequence[str]]
    ) -> Verdict:
        identity = self.identity(request, peer, forwarded_for)
        if identity is None:
            return UNLIMITED
        return self.verdict(await self.adecide(identity))

    def verdict(self, decision: Decision) -> Verdict:
        return Verdict(decision, self.headers(decision))

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

    def refusal(self, decision: Decision) -> Refusal:
        """The 429 answer: status, headers, body."""
        return self.verdict(decision).refusal()
