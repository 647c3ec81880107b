"""cachekit.ratelimit.http: one request's flow (HttpRateLimit.check -> Verdict), the one
every adapter (Flask, Django, Starlette) follows, tested with no framework."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from cachekit import Cache
from cachekit.ratelimit.http import (
    TOO_MANY_REQUESTS_BODY,
    UNLIMITED,
    HttpRateLimit,
    Verdict,
    configured_options,
)


def no_forwarded_for() -> Sequence[str]:
    raise AssertionError("X-Forwarded-For read without a trusted proxy")


def test_admitted_then_refused_with_the_answers_headers() -> None:
    limit: HttpRateLimit[object] = HttpRateLimit(Cache(), "1/hour", name="api")
    admitted = limit.check(object(), "192.0.2.1", no_forwarded_for)
    assert not admitted.refused and admitted.decision is not None
    names = {name for name, _ in admitted.headers}
    assert {"RateLimit", "RateLimit-Policy"} <= names and "Retry-After" not in names
    refused = limit.check(object(), "192.0.2.1", no_forwarded_for)
    assert refused.refused
    status, headers, body = refused.refusal()
    assert status == 429 and body == TOO_MANY_REQUESTS_BODY
    assert headers[0] == ("Content-Type", "text/plain; charset=utf-8")
    assert dict(headers)["Retry-After"] == "3600" and headers[1:] == list(refused.headers)
    assert not limit.check(object(), "192.0.2.2", no_forwarded_for).refused  # another peer


def test_a_key_giving_none_is_unlimited_and_counts_nothing() -> None:
    cache = Cache()
    seen: list[str] = []

    def key(request: str) -> str | None:
        seen.append(request)
        return None if request == "staff" else request

    limit: HttpRateLimit[str] = HttpRateLimit(cache, "1/hour", key=key)
    for _ in range(3):
        verdict = limit.check("staff", "192.0.2.1", no_forwarded_for)
        assert verdict is UNLIMITED and not verdict.refused and verdict.headers == ()
    assert not limit.check("user", "192.0.2.1", no_forwarded_for).refused
    assert limit.check("user", "192.0.2.1", no_forwarded_for).refused
    assert seen == ["staff"] * 3 + ["user"] * 2
    assert limit.limiter.peek("staff").remaining == 1  # never counted


def test_without_headers_only_a_refusal_says_when_to_retry() -> None:
    limit: HttpRateLimit[None] = HttpRateLimit(Cache(), "1/hour", headers=False)
    assert limit.check(None, "192.0.2.1", no_forwarded_for).headers == []
    refused = limit.check(None, "192.0.2.1", no_forwarded_for)
    assert [name for name, _ in refused.headers] == ["Retry-After"]
    assert [name for name, _ in refused.refusal()[1]] == ["Content-Type", "Retry-After"]


def test_forwarded_for_counts_only_from_a_trusted_proxy() -> None:
    limit: HttpRateLimit[None] = HttpRateLimit(Cache(), "1/hour", trusted_proxies="10.0.0.0/8")

    def via(client: str) -> Sequence[str]:
        return [client]

    assert not limit.check(None, "10.0.0.1", lambda: via("192.0.2.7")).refused
    assert limit.check(None, "10.0.0.2", lambda: via("192.0.2.7")).refused  # same client
    assert not limit.check(None, "10.0.0.2", lambda: via("192.0.2.8")).refused
    assert not limit.check(None, "198.51.100.1", lambda: via("192.0.2.7")).refused  # untrusted


def test_acheck_decides_as_check() -> None:
    limit: HttpRateLimit[None] = HttpRateLimit(Cache(), "2/hour", cost=2)

    async def main() -> list[Verdict]:
        return [await limit.acheck(None, "192.0.2.1", no_forwarded_for) for _ in range(2)]

    first, second = asyncio.run(main())
    assert not first.refused and second.refused
    assert second.refusal()[1][1:] == list(limit.headers(second.decision))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("settings", "given", "expected"),
    [
        ({"default": "1/s", "exempt": ["x"], "burst": 3}, {}, {"burst": 3}),
        ({"burst": 3, "name": "n"}, {"burst": 5}, {"burst": 5, "name": "n"}),
        ({}, {"cost": 2}, {"cost": 2}),
    ],
)
def test_configured_options_keep_the_limits_own_and_let_given_ones_win(
    settings: dict[str, object], given: dict[str, object], expected: dict[str, object]
) -> None:
    assert configured_options(settings, given) == expected
