"""What the sync and async limiters share: the rule, the keys, the fallback on errors."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from ..backends import base
from ..core.keys import internal_head, normalize_key
from ..exceptions import BackendError, ConfigurationError
from ..metrics import Hub, hub_of
from ._local import LocalBuckets
from .rules import US, Decision, Rate, Rule

if TYPE_CHECKING:
    from .._cache import Cache

__all__ = ["ON_ERROR", "LimiterCore"]

logger = logging.getLogger(__name__)

ON_ERROR = ("allow", "deny", "local")
DENY_RETRY_AFTER = 1.0  # what a refusal says when Redis cannot be asked (on_error="deny")


def _part(text: str) -> str:
    """A key part with no bare ':' or '%' (so name and identity cannot run together)."""
    return text.replace("%", "%25").replace(":", "%3A") if (":" in text or "%" in text) else text


class LimiterCore:
    """A named limit over a cache's backend. On Redis each decision is one script (the
    server's clock) on one key per identity,
    ``#{namespace}rl:<algorithm>:{<name>:<identity>}``: outside the namespace's patterns
    (``clear()`` does not reset limits) and hash-tagged (one slot). On an in-process
    backend: :class:`~cachekit.ratelimit._local.LocalBuckets`.

    When Redis cannot be asked (circuit open, timeout, error), ``on_error`` decides:
    ``"allow"`` admits, ``"deny"`` refuses (``retry_after`` 1 s), ``"local"`` asks an
    in-process limiter with the same rule (each process then limits on its own). With the
    circuit open no call waits on Redis; the first failure costs one socket timeout
    (``timeout``, 0.25 s by default) and opens the circuit.

    With ``metrics=`` on the cache, each hit (not a peek) is reported once to the cache's
    metrics hub: allowed, limited, or fallback (``on_error`` decided), labelled with the
    limiter's name (never the identity). Without a listener a hit checks one attribute.
    """

    def __init__(
        self,
        cache: Cache,
        name: str,
        rate: str | Rate | tuple[int, float],
        *,
        burst: int | None = None,
        algorithm: str = "gcra",
        on_error: str = "allow",
    ) -> None:
        if not isinstance(name, str) or not name:
            raise ConfigurationError(
                f"a rate limiter's name must be a non-empty string, not {name!r}"
            )
        if on_error not in ON_ERROR:
            raise ConfigurationError(
                f"on_error must be one of {', '.join(ON_ERROR)}, not {on_error!r}"
            )
        self.name = name
        self.rule = Rule.make(rate, burst, algorithm)
        self.on_error = on_error
        self._cache = cache
        self._breaker = cache._breaker
        # the head of this limiter's keys: the identity goes inside the hash tag's braces;
        # each algorithm keeps its own state (a name reused with another one starts afresh)
        head = internal_head(cache.namespace.text, "rl")
        self._head = f"{head}{self.rule.algorithm}:{{{_part(name)}:"
        self._script = self.rule.script()
        self._params = self.rule.args(1, 1)[2:]  # the script's ARGV after cost and record
        self._limit = self.rule.limit
        # an in-process store: its buckets, shared by every cache over it (as Redis is)
        local: base.LocalState | None = cache._local_state
        self._buckets: LocalBuckets | None = None if local is None else local.get(LocalBuckets)
        self._scripts: base.Scripts | None = cache._scripts
        self._ascripts: base.AsyncScripts | None = cache._ascripts
        if self._buckets is None and self._scripts is None and self._ascripts is None:
            raise ConfigurationError(
                "rate limits need a backend offering local_state() (in-process) or "
                "scripts() (Redis): see cachekit.backends.base"
            )
        self._fallback = LocalBuckets() if on_error == "local" else None
        hub = hub_of(cache)  # attached when the cache was made (metrics=)
        self._hub: Hub | None = hub if hub is not None and hub.decisions else None

    def _report(self, decision: Decision) -> Decision:
        """Tell the metrics hub about a hit's decision (only called when there is one)."""
        assert self._hub is not None
        self._hub.ratelimit(self.name, decision.allowed, decision.fallback)
        return decision

    @property
    def limit(self) -> int:
        return self.rule.limit

    @property
    def algorithm(self) -> str:
        return self.rule.algorithm

    def key(self, identity: Any) -> str:
        """The backend key holding ``identity``'s state (any cache key: str, int, tuple...)."""
        return f"{self._head}{_part(normalize_key(identity))}}}"

    def _local(self, key: str, cost: int, record: bool) -> Decision:
        assert self._buckets is not None
        return self._buckets.decide(key, cost, record, self.rule)

    def _args(self, cost: int, record: bool) -> list[int]:
        return [cost, 1 if record else 0, *self._params]

    def _reply(self, reply: Any) -> Decision:
        allowed, remaining, reset, retry = reply
        return Decision(allowed == 1, self._limit, remaining, reset / US, retry / US)

    def _unavailable(self, key: str, cost: int, record: bool) -> Decision:
        """Redis cannot be asked: ``on_error`` decides, at once."""
        rule = self.rule
        if self._fallback is not None:
            local = self._fallback.decide(key, cost, record, rule)
            return Decision(local.allowed, local.limit, local.remaining, local.reset_after,
                            local.retry_after, True)  # fmt: skip
        if self.on_error == "deny":
            return Decision(False, rule.limit, 0, DENY_RETRY_AFTER, DENY_RETRY_AFTER, True)
        return Decision(True, rule.limit, rule.limit - cost, 0.0, 0.0, True)

    def _open(self, key: str, cost: int, record: bool) -> Decision:
        self._breaker.resume()  # a cache used again after close() mid-outage
        return self._unavailable(key, cost, record)

    def _failed(self, exc: BaseException, key: str, cost: int, record: bool) -> Decision:
        error = self._cache._counted(exc)  # counted; an outage opens the circuit
        if not isinstance(error, BackendError):
            raise error from exc
        return self._unavailable(key, cost, record)

    def _no_scripts(self, side: str) -> ConfigurationError:
        return ConfigurationError(f"this cache's {side} backend offers no scripts()")

    def __repr__(self) -> str:
        rate = self.rule.rate
        return (
            f"<RateLimiter {self.name!r} {rate.limit}/{rate.period:g}s "
            f"{self.rule.algorithm} burst={self.rule.burst}>"
        )
