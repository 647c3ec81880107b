"""The pure rules: rates, each algorithm's boundaries on a clock the test holds, the Lua
scripts computing exactly what the Python functions compute, headers, client addresses."""

from __future__ import annotations

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cachekit.exceptions import ConfigurationError, InvalidArgumentError
from cachekit.ratelimit.rules import (
    US,
    Decision,
    Rate,
    Rule,
    client_address,
    decide,
    decision,
    parse_rate,
    rate_limit_headers,
    trusted_networks,
)


@pytest.mark.parametrize(
    ("text", "limit", "period"),
    [
        ("100/minute", 100, 60.0),
        ("10/second", 10, 1.0),
        ("10/s", 10, 1.0),
        ("5 per 10 minutes", 5, 600.0),
        ("3/2s", 3, 2.0),
        ("1000/day", 1000, 86400.0),
        (" 7 / hours ", 7, 3600.0),
        ("2/0.5 sec", 2, 0.5),
    ],
)
def test_parse_rate(text: str, limit: int, period: float) -> None:
    assert parse_rate(text) == Rate(limit, period)


@pytest.mark.parametrize(
    "bad",
    ["", "minute", "0/minute", "-1/minute", "10/fortnight", "10", "1.5/s", 10, (0, 1), (1, 0)],
)
def test_bad_rates_are_configuration_errors(bad: object) -> None:
    with pytest.raises(ConfigurationError):
        parse_rate(bad)  # type: ignore[arg-type]


def test_rule_validation() -> None:
    with pytest.raises(ConfigurationError, match="algorithm"):
        Rule.make("1/s", None, "leaky")
    with pytest.raises(ConfigurationError, match="burst"):
        Rule.make("1/s", 5, "sliding")
    with pytest.raises(ConfigurationError, match="burst"):
        Rule.make("1/s", 0, "gcra")
    rule = Rule.make("10/s", 3, "gcra")
    assert rule.limit == 3 and rule.window == pytest.approx(0.3)
    for cost in (0, -1, 1.5, True, "1", 4):
        with pytest.raises(InvalidArgumentError):
            rule.check_cost(cost)


class Clock:
    """Runs an algorithm the way the in-process limiter does, on a clock the test moves."""

    def __init__(self, rule: Rule, expire: bool = True) -> None:
        self.rule = rule
        self.expire = expire
        self.now = 1_000 * US
        self.state: tuple[int, ...] | None = None
        self.expires = 0

    def hit(self, cost: int = 1, record: bool = True) -> Decision:
        state = self.state if self.expires > self.now or not self.expire else None
        kept, ttl, allowed, remaining, reset, retry = decide(
            state, self.now, cost, record, self.rule
        )
        if kept is not None:
            self.state, self.expires = kept, self.now + ttl
        return decision(self.rule, allowed, remaining, reset, retry)

    def wait(self, seconds: float) -> None:
        self.now += round(seconds * US)


def test_gcra_burst_then_one_per_interval() -> None:
    clock = Clock(Rule.make("10/s", 4, "gcra"))  # one unit per 100 ms, 4 at once
    assert [clock.hit().allowed for _ in range(5)] == [True] * 4 + [False]
    refused = clock.hit()
    assert refused.remaining == 0 and refused.retry_after == pytest.approx(0.1)
    clock.wait(0.099999)
    assert not clock.hit().allowed  # one microsecond early
    clock.wait(0.000001)
    assert clock.hit().allowed and not clock.hit().allowed  # exactly one unit came back
    clock.wait(10)
    full = clock.hit(record=False)
    assert full.remaining == 4 and full.limit == 4


def test_gcra_cost_greater_than_remaining_takes_nothing() -> None:
    clock = Clock(Rule.make("10/s", 5, "gcra"))
    assert clock.hit(3).remaining == 2
    refused = clock.hit(3)
    assert not refused.allowed and refused.remaining == 2
    assert refused.retry_after == pytest.approx(0.1)  # one more unit needed
    assert clock.hit(2).allowed  # the refusal took nothing
    assert clock.hit(5, record=False).retry_after == pytest.approx(0.5)


def test_fixed_window_edges() -> None:
    clock = Clock(Rule.make("3/s", None, "fixed"))
    assert [clock.hit().allowed for _ in range(4)] == [True, True, True, False]
    clock.wait(0.999999)
    refused = clock.hit()
    assert not refused.allowed and refused.retry_after == pytest.approx(1e-6)
    clock.wait(0.000001)  # the window ends exactly here
    fresh = clock.hit()
    assert fresh.allowed and fresh.remaining == 2 and fresh.reset_after == pytest.approx(1.0)


def test_sliding_window_weights_the_previous_window() -> None:
    clock = Clock(Rule.make("10/s", None, "sliding"))
    assert all(clock.hit().allowed for _ in range(10))
    refused = clock.hit()
    assert not refused.allowed
    clock.wait(1.0)  # new window: the previous 10 weigh 10 * (1 - 0) = 10
    assert not clock.hit().allowed
    clock.wait(0.25)  # weight 0.75: 7.5 used, 2 more fit
    assert clock.hit().allowed and clock.hit().allowed and not clock.hit().allowed
    clock.wait(2.0)  # two windows later nothing is remembered
    assert clock.hit(record=False).remaining == 10


@pytest.mark.parametrize("algorithm", ["gcra", "sliding", "fixed"])
def test_retry_after_is_exact(algorithm: str) -> None:
    """A refused hit retried after ``retry_after`` is admitted; a microsecond before, not."""
    clock = Clock(Rule.make("5/s", None, algorithm))
    for _ in range(20):
        refused = clock.hit(2)
        if refused.allowed:
            clock.wait(0.03)
            continue
        wait = round(refused.retry_after * US)
        if wait > 1:
            clock.now += wait - 1
            assert not clock.hit(2, record=False).allowed
            clock.now += 1
        else:
            clock.now += wait
        assert clock.hit(2, record=False).allowed


# -- the Lua scripts compute what the Python functions compute ------------------------


def _lua_at_fixed_time(script: str) -> str:
    """The script with the server's TIME replaced by the last argument (µs)."""
    head = "local t = redis.call('TIME')\nlocal now = tonumber(t[1]) * 1000000 + tonumber(t[2])"
    assert head in script
    return script.replace(head, "local now = tonumber(ARGV[#ARGV])")


@pytest.fixture
def client(redis_url: str) -> redis.Redis:
    return redis.Redis.from_url(redis_url)


steps = st.lists(
    st.tuples(st.integers(0, 400_000), st.integers(1, 5), st.booleans()), min_size=1, max_size=30
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    algorithm=st.sampled_from(["gcra", "sliding", "fixed"]),
    limit=st.integers(1, 9),
    period=st.sampled_from([0.3, 1.0, 7.0]),
    sequence=steps,
)
def test_lua_matches_python(
    client: redis.Redis,
    algorithm: str,
    limit: int,
    period: float,
    sequence: list[tuple[int, int, bool]],
) -> None:
    rule = Rule.make((limit, period), None, algorithm)
    script = client.register_script(_lua_at_fixed_time(rule.script()))
    key = f"lua-parity:{algorithm}:{limit}:{period}:{id(sequence)}"
    client.delete(key)
    # the test's clock runs far ahead of the real one: the key does not expire in Redis, so
    # neither does the state here (an expired state and none decide alike, see the test
    # below; the sliding window's start differs, by design of either)
    clock = Clock(rule, expire=False)
    for gap, cost, record in sequence:
        clock.now += gap
        cost = min(cost, rule.limit)
        expected = clock.hit(cost, record)
        got = decision(rule, *script(keys=[key], args=[*rule.args(cost, int(record)), clock.now]))
        assert got == expected, (gap, cost, record)
    client.delete(key)


# -- headers ----------------------------------------------------------------------------


def test_headers_follow_the_latest_draft() -> None:
    rule = Rule.make("100/minute", None, "fixed")
    allowed = Decision(True, 100, 42, 30.2, 0.0)
    assert rate_limit_headers(allowed, rule, "api") == [
        ("RateLimit-Policy", '"api";q=100;w=60'),
        ("RateLimit", '"api";r=42;t=31'),
    ]
    refused = Decision(False, 100, 0, 12.0, 0.3)
    headers = dict(rate_limit_headers(refused, rule, 'we"ird\n', legacy=True))
    assert headers["Retry-After"] == "1"  # whole seconds, never 0 for a refusal
    assert headers["RateLimit-Policy"] == '"we_ird_";q=100;w=60'
    assert headers["X-RateLimit-Remaining"] == "0" and headers["X-RateLimit-Reset"] == "12"
    gcra = Rule.make("100/minute", 20, "gcra")  # 20 at once, refilled in 12 s
    assert dict(rate_limit_headers(Decision(True, 20, 19, 0.6, 0.0), gcra))["RateLimit-Policy"] == (
        '"default";q=20;w=12'
    )


def test_client_address_trusts_forwarded_for_only_from_trusted_proxies() -> None:
    proxies = trusted_networks("10.0.0.0/8, 127.0.0.1")
    spoofed = ["1.2.3.4"]
    assert client_address("203.0.113.9", spoofed, ()) == "203.0.113.9"
    assert client_address("203.0.113.9", spoofed, proxies) == "203.0.113.9"  # peer not a proxy
    # through two proxies: the client wrote "1.2.3.4" itself, the first proxy saw 198.51.100.7
    assert client_address("127.0.0.1", ["1.2.3.4, 198.51.100.7", "10.1.1.1"], proxies) == (
        "198.51.100.7"
    )
    assert client_address("127.0.0.1", [], proxies) == "127.0.0.1"
    assert client_address(None, [], ()) == "unknown"
    with pytest.raises(ConfigurationError):
        trusted_networks(["not-an-ip"])
