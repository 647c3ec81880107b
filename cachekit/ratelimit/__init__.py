"""Rate limiting over a cache's backend: ``cache.rate_limiter(...)``, ``@cache.rate_limit``.

One atomic Lua script per decision on Redis, on the server's clock (GCRA, sliding-window
counter, fixed window: :mod:`cachekit.ratelimit.rules`); the same algorithms in process on
the memory backend. The framework adapters (``cachekit.integrations.*.ratelimit``) turn
decisions into 429 responses with ``Retry-After`` and the IETF ``RateLimit`` headers.
"""

from ._limiter import RateLimiter, rate_limit
from .rules import ALGORITHMS, Decision, Rate, Rule, client_address, parse_rate, rate_limit_headers

__all__ = [
    "ALGORITHMS",
    "Decision",
    "Rate",
    "RateLimiter",
    "Rule",
    "client_address",
    "parse_rate",
    "rate_limit",
    "rate_limit_headers",
]
