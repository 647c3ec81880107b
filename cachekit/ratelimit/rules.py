"""Rate limiting, the pure part: rates, the three algorithms, their Lua twins, headers.

Everything here is a plain function over values and a clock reading in integer
microseconds; the in-process limiter (:mod:`cachekit.ratelimit._local`) runs the Python
functions, Redis runs the Lua scripts, which compute the same thing on the server's clock
(``TIME`` inside the script: app hosts whose clocks disagree cannot over-admit).

Algorithms (one key per identity, so one cluster slot, one round trip per decision):

- ``gcra`` (default): the generic cell rate algorithm. One number per identity, the
  *theoretical arrival time* (TAT). Units are emitted every ``T = period / limit``; a hit of
  ``cost`` is admitted when ``TAT + cost*T - now <= burst*T``. Smooth and exact: a fresh
  identity gets ``burst`` at once (default ``burst = limit``), then one every ``T``.
- ``sliding``: the sliding-window counter (the current and the previous window's counts,
  the previous one weighted by how much of it still overlaps the last ``period``).
- ``fixed``: a fixed window of ``period`` starting at an identity's first hit.

Numbers are integer microseconds on both sides: Lua numbers are doubles, exact up to
2**53 µs (285 years since the epoch), and Redis truncates a script's numeric replies to
integers, so the scripts reply in µs and this module turns them into float seconds.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from ..exceptions import ConfigurationError, InvalidArgumentError

__all__ = [
    "ALGORITHMS",
    "Decision",
    "Rate",
    "Rule",
    "client_address",
    "decide",
    "parse_rate",
    "rate_limit_headers",
]

ALGORITHMS = ("gcra", "sliding", "fixed")
US = 1_000_000  # microseconds per second

_UNITS = {
    "s": 1, "sec": 1, "second": 1,
    "m": 60, "min": 60, "minute": 60,
    "h": 3600, "hr": 3600, "hour": 3600,
    "d": 86400, "day": 86400,
}  # fmt: skip
_RATE = re.compile(r"\s*(\d+)\s*(?:/|\bper\b)\s*(\d+(?:\.\d+)?)?\s*([a-z]+?)s?\s*", re.IGNORECASE)


@dataclass(frozen=True)
class Rate:
    """``limit`` units per ``period`` seconds."""

    limit: int
    period: float

    def __str__(self) -> str:
        period = int(self.period) if float(self.period).is_integer() else self.period
        return f"{self.limit}/{period}s"


def parse_rate(rate: str | Rate | tuple[int, float]) -> Rate:
    """``"100/minute"``, ``"10/second"``, ``"5 per 10 minutes"``, ``"1000/day"``, ``"3/2s"``
    (units: s, sec, second, m, min, minute, h, hr, hour, d, day; plurals), a :class:`Rate`
    or a ``(limit, period_seconds)`` tuple."""
    if isinstance(rate, Rate):
        limit, period = rate.limit, rate.period
    elif isinstance(rate, tuple) and len(rate) == 2:
        limit, period = rate
    elif isinstance(rate, str):
        match = _RATE.fullmatch(rate)
        unit = _UNITS.get(match.group(3).lower()) if match else None
        if match is None or unit is None:
            raise ConfigurationError(
                f"rate {rate!r}: expected '<count>/<unit>' or '<count>/<n> <unit>' "
                f"(e.g. '100/minute', '5/10 seconds'; units {', '.join(sorted(set(_UNITS)))})"
            )
        limit = int(match.group(1))
        period = float(match.group(2) or 1) * unit
    else:
        raise ConfigurationError(f"rate must be a string like '100/minute', not {rate!r}")
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ConfigurationError(f"rate {rate!r}: the count must be a positive integer")
    if isinstance(period, bool) or not isinstance(period, int | float):
        raise ConfigurationError(f"rate {rate!r}: the period must be seconds")
    if not math.isfinite(period) or period * US < 1 or period > 10 * 365 * 86400:
        raise ConfigurationError(f"rate {rate!r}: the period must be 1 µs to 10 years")
    return Rate(limit, float(period))


@dataclass(slots=True)  # not frozen: a frozen dataclass's __init__ costs a µs per decision
class Decision:
    """What a limiter decided: ``allowed``; ``limit`` (units an identity may hold: the
    burst for GCRA, the window's quota otherwise); ``remaining`` units now; ``reset_after``
    seconds until the identity is back to a full allowance; ``retry_after`` seconds until a
    refused hit of the same cost would be admitted (0.0 when allowed). ``fallback`` is
    True when the backend could not be asked and ``on_error`` decided."""

    allowed: bool
    limit: int
    remaining: int
    reset_after: float
    retry_after: float
    fallback: bool = False

    def __bool__(self) -> bool:
        return self.allowed


@dataclass(frozen=True)
class Rule:
    """One limiter's parameters in the units the algorithms use (µs)."""

    algorithm: str
    rate: Rate
    burst: int

    @classmethod
    def make(cls, rate: str | Rate | tuple[int, float], burst: int | None, algorithm: str) -> Rule:
        parsed = parse_rate(rate)
        if algorithm not in ALGORITHMS:
            raise ConfigurationError(
                f"algorithm must be one of {', '.join(ALGORITHMS)}, not {algorithm!r}"
            )
        if burst is not None:
            if isinstance(burst, bool) or not isinstance(burst, int) or burst < 1:
                raise ConfigurationError(f"burst must be a positive integer, not {burst!r}")
            if algorithm != "gcra" and burst != parsed.limit:
                raise ConfigurationError(
                    f"burst applies to algorithm='gcra'; a {algorithm} window admits the "
                    f"rate's count ({parsed.limit}) per period"
                )
        return cls(algorithm, parsed, parsed.limit if burst is None else burst)

    @property
    def period_us(self) -> int:
        return max(1, round(self.rate.period * US))

    @property
    def interval_us(self) -> int:
        """GCRA's emission interval: one unit every this many µs."""
        return max(1, round(self.rate.period * US / self.rate.limit))

    @property
    def limit(self) -> int:
        return self.burst if self.algorithm == "gcra" else self.rate.limit

    @property
    def window(self) -> float:
        """Seconds over which :attr:`limit` units are granted (the policy's window)."""
        if self.algorithm == "gcra":
            return self.burst * self.interval_us / US
        return self.rate.period

    def check_cost(self, cost: Any) -> int:
        if cost.__class__ is int and 0 < cost <= self.limit:  # the common case, quickly
            return int(cost)
        if isinstance(cost, bool) or not isinstance(cost, int) or cost < 1:
            raise InvalidArgumentError(f"cost must be a positive integer, not {cost!r}")
        if cost > self.limit:
            raise InvalidArgumentError(
                f"cost {cost} exceeds the limit ({self.limit}): it could never be admitted"
            )
        return cost

    def script(self) -> str:
        return _SCRIPTS[self.algorithm]

    def args(self, cost: int, record: int) -> list[int]:
        """The script's ARGV after the key: cost, record (0: peek), parameters."""
        if self.algorithm == "gcra":
            return [cost, record, self.interval_us, self.burst]
        return [cost, record, self.period_us, self.rate.limit]


# -- the algorithms (Python; in-process) ------------------------------------------------
# Each takes the stored state (a tuple of ints, or None), ``now`` (µs), cost, record and
# the rule; returns (state to store or None to leave it, ttl µs, allowed, remaining,
# reset µs, retry µs).

Outcome = tuple["tuple[int, ...] | None", int, bool, int, int, int]


def _gcra(state: tuple[int, ...] | None, now: int, cost: int, record: bool, rule: Rule) -> Outcome:
    step = rule.interval_us
    tolerance = step * rule.burst
    tat = max(state[0], now) if state else now
    new_tat = tat + cost * step
    if new_tat - now <= tolerance:
        remaining = (tolerance - (new_tat - now)) // step
        if not record:  # a peek: what is left now, and when it is full again from now
            return None, 0, True, remaining + cost, tat - now, 0
        return (new_tat,), new_tat - now, True, remaining, new_tat - now, 0
    remaining = (tolerance - (tat - now)) // step
    return None, 0, False, remaining, tat - now, new_tat - tolerance - now


def _sliding(
    state: tuple[int, ...] | None, now: int, cost: int, record: bool, rule: Rule
) -> Outcome:
    period, limit = rule.period_us, rule.rate.limit
    start, current, previous = state if state else (now, 0, 0)
    elapsed = now - start
    if elapsed >= period:
        windows = elapsed // period
        previous = current if windows == 1 else 0
        current = 0
        start += windows * period
        elapsed = now - start
    used = previous * (period - elapsed) / period + current
    if used + cost <= limit:
        current += cost
        remaining = math.floor(limit - used - cost)
        reset = 2 * period - elapsed
        if not record:  # a peek: what is left now
            return None, 0, True, remaining + cost, reset, 0
        return (start, current, previous), reset, True, remaining, reset, 0
    remaining = max(0, math.floor(limit - used))
    if current + cost > limit:  # not before the next window, when `current` is weighted
        retry = period - elapsed + math.ceil(period * (1 - (limit - cost) / current))
    else:  # once enough of the previous window has slid out
        retry = math.ceil(period * (1 - (limit - cost - current) / previous)) - elapsed
    reset = 2 * period - elapsed if current else period - elapsed
    return None, 0, False, remaining, reset, max(1, retry)


def _fixed(state: tuple[int, ...] | None, now: int, cost: int, record: bool, rule: Rule) -> Outcome:
    period, limit = rule.period_us, rule.rate.limit
    start, count = state if state else (now, 0)
    if now - start >= period:
        start, count = now, 0
    left = start + period - now
    if count + cost <= limit:
        if not record:  # a peek: what is left now
            return None, 0, True, limit - count, left, 0
        return (start, count + cost), left, True, limit - count - cost, left, 0
    return None, 0, False, limit - count, left, left


_ALGORITHMS = {"gcra": _gcra, "sliding": _sliding, "fixed": _fixed}


def decide(state: tuple[int, ...] | None, now: int, cost: int, record: bool, rule: Rule) -> Outcome:
    """Run ``rule``'s algorithm on ``state`` at ``now`` (µs)."""
    return _ALGORITHMS[rule.algorithm](state, now, cost, record, rule)


def decision(rule: Rule, allowed: Any, remaining: Any, reset_us: Any, retry_us: Any) -> Decision:
    """A :class:`Decision` from an algorithm's (or a script's) reply."""
    return Decision(
        bool(int(allowed)), rule.limit, int(remaining), int(reset_us) / US, int(retry_us) / US
    )


# -- the same algorithms in Lua (Redis; the server's clock) ---------------------------
# KEYS[1]: the identity's key. ARGV: cost, record (0: peek), then the rule's parameters.
# State is one string of integers (a value that does not parse is no state: overwritten by
# the next admitted hit); replies are {allowed, remaining, reset µs, retry µs}.

_PRELUDE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local cost = tonumber(ARGV[1])
local record = ARGV[2] == '1'
local raw = redis.call('GET', KEYS[1])
local function keep(text, ttl)
  redis.call('SET', KEYS[1], text, 'PX', math.max(1, math.ceil(ttl / 1000)))
end
"""

GCRA_SCRIPT = (
    _PRELUDE
    + """
local step = tonumber(ARGV[3])
local tolerance = step * tonumber(ARGV[4])
local tat = now
local stored = raw and tonumber(raw)  -- state that does not parse counts as none
if stored then tat = math.max(stored, now) end
local new_tat = tat + cost * step
if new_tat - now <= tolerance then
  local remaining = math.floor((tolerance - (new_tat - now)) / step)
  if not record then return {1, remaining + cost, tat - now, 0} end
  keep(string.format('%.0f', new_tat), new_tat - now)
  return {1, remaining, new_tat - now, 0}
end
return {0, math.floor((tolerance - (tat - now)) / step), tat - now, new_tat - tolerance - now}
"""
)

SLIDING_SCRIPT = (
    _PRELUDE
    + """
local period = tonumber(ARGV[3])
local limit = tonumber(ARGV[4])
local start, current, previous = now, 0, 0
local s, c, p = string.match(raw or '', '^(%d+) (%d+) (%d+)$')
if s then start, current, previous = tonumber(s), tonumber(c), tonumber(p) end
local elapsed = now - start
if elapsed >= period then
  local windows = math.floor(elapsed / period)
  if windows == 1 then previous = current else previous = 0 end
  current = 0
  start = start + windows * period
  elapsed = now - start
end
local used = previous * (period - elapsed) / period + current
if used + cost <= limit then
  local remaining = math.floor(limit - used - cost)
  if not record then return {1, remaining + cost, 2 * period - elapsed, 0} end
  current = current + cost
  keep(string.format('%.0f %.0f %.0f', start, current, previous), 2 * period - elapsed)
  return {1, remaining, 2 * period - elapsed, 0}
end
local retry
if current + cost > limit then
  retry = period - elapsed + math.ceil(period * (1 - (limit - cost) / current))
else
  retry = math.ceil(period * (1 - (limit - cost - current) / previous)) - elapsed
end
local reset = period - elapsed
if current > 0 then reset = 2 * period - elapsed end
return {0, math.max(0, math.floor(limit - used)), reset, math.max(1, retry)}
"""
)

FIXED_SCRIPT = (
    _PRELUDE
    + """
local period = tonumber(ARGV[3])
local limit = tonumber(ARGV[4])
local start, count = now, 0
local s, c = string.match(raw or '', '^(%d+) (%d+)$')
if s then start, count = tonumber(s), tonumber(c) end
if now - start >= period then start, count = now, 0 end
local left = start + period - now
if count + cost <= limit then
  if not record then return {1, limit - count, left, 0} end
  keep(string.format('%.0f %.0f', start, count + cost), left)
  return {1, limit - count - cost, left, 0}
end
return {0, limit - count, left, left}
"""
)

RESET_SCRIPT = "return redis.call('DEL', KEYS[1])"

_SCRIPTS = {"gcra": GCRA_SCRIPT, "sliding": SLIDING_SCRIPT, "fixed": FIXED_SCRIPT}


# -- HTTP: headers and the client's address ----------------------------------------------

_TOKEN_UNSAFE = re.compile(r'[^\x20-\x7e]|["\\]')


def _sf_string(text: str) -> str:
    """``text`` as a Structured Field string (RFC 9651): printable ASCII, quoted."""
    return '"' + _TOKEN_UNSAFE.sub("_", text) + '"'


def rate_limit_headers(
    decision: Decision, rule: Rule, policy: str = "default", legacy: bool = False
) -> list[tuple[str, str]]:
    """Response headers for ``decision`` (draft-ietf-httpapi-ratelimit-headers, -08 and
    later: ``RateLimit-Policy: "name";q=<quota>;w=<window s>`` and
    ``RateLimit: "name";r=<remaining>;t=<seconds to reset>``), ``Retry-After`` when
    refused, and with ``legacy`` the ``X-RateLimit-Limit/-Remaining/-Reset`` trio."""
    name = _sf_string(policy)
    window = max(1, math.ceil(rule.window))
    reset = max(0, math.ceil(decision.reset_after))
    remaining = max(0, decision.remaining)
    headers = [
        ("RateLimit-Policy", f"{name};q={decision.limit};w={window}"),
        ("RateLimit", f"{name};r={remaining};t={reset}"),
    ]
    if not decision.allowed:
        headers.append(("Retry-After", str(max(1, math.ceil(decision.retry_after)))))
    if legacy:
        headers += [
            ("X-RateLimit-Limit", str(decision.limit)),
            ("X-RateLimit-Remaining", str(remaining)),
            ("X-RateLimit-Reset", str(reset)),
        ]
    return headers


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def trusted_networks(proxies: Iterable[str] | str | None) -> tuple[Network, ...]:
    """Addresses or networks (``"10.0.0.0/8"``, ``"127.0.0.1"``) of trusted proxies."""
    if proxies is None:
        return ()
    if isinstance(proxies, str):
        proxies = [p for p in re.split(r"[\s,]+", proxies) if p]
    try:
        return tuple(ipaddress.ip_network(p, strict=False) for p in proxies)
    except ValueError as exc:
        raise ConfigurationError(f"trusted_proxies: {exc}") from exc


def _trusted(address: str, networks: Sequence[Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in networks)


def client_address(
    peer: str | None, forwarded_for: Sequence[str], networks: Sequence[Network]
) -> str:
    """The client's address: the connection's ``peer``, unless the peer is a trusted proxy;
    then the ``X-Forwarded-For`` hops are read from the right, skipping trusted proxies,
    and the first untrusted one is the client (an address a client wrote at the left of
    the header is never believed). No peer: ``"unknown"`` (all such requests share one
    limit rather than none)."""
    address = peer or "unknown"
    if not networks or not _trusted(address, networks):
        return address
    hops = [hop.strip() for header in forwarded_for for hop in header.split(",") if hop.strip()]
    for hop in reversed(hops):
        address = hop
        if not _trusted(hop, networks):
            return hop
    return address
