"""cache.rate_limiter / @cache.rate_limit on every backend: isolation between identities,
limiters and caches; peek and reset; bad arguments; what RateLimited carries."""

from __future__ import annotations

import pickle
import uuid
from collections.abc import Iterator

import pytest

import cachekit
from cachekit import Cache, RateLimited
from cachekit.exceptions import CacheKitError, ConfigurationError, InvalidArgumentError


@pytest.fixture(params=["memory", "redis", "fakeredis"])
def cache(request: pytest.FixtureRequest) -> Iterator[Cache]:
    prefix = f"a{uuid.uuid4().hex[:10]}"
    url = {"memory": "memory://", "fakeredis": "fakeredis://"}.get(request.param)
    cache = Cache(url or request.getfixturevalue("redis_url"), prefix=prefix)
    yield cache
    cache.close()


def test_identities_limiters_and_caches_are_separate(cache: Cache) -> None:
    a = cache.rate_limiter("a", rate="2/hour")
    assert [a.hit("u1").allowed for _ in range(3)] == [True, True, False]
    assert a.hit("u2").allowed  # another identity
    assert cache.rate_limiter("b", rate="2/hour").hit("u1").allowed  # another name
    # names and identities with ':' cannot run together
    assert cache.rate_limiter("a:u1", rate="1/hour").key("x") != a.key("u1:x")
    assert a.hit(("u", 1)).allowed and a.hit(("u", 1)).allowed and not a.hit("u:1").allowed
    other = cache.with_options(prefix=cache.prefix + "x")
    assert other.rate_limiter("a", rate="2/hour").hit("u1").allowed  # another namespace


def test_same_name_and_backend_share_the_limit(cache: Cache) -> None:
    first = cache.rate_limiter("shared", rate="2/hour")
    second = cache.with_options(default_ttl=5).rate_limiter("shared", rate="2/hour")
    assert first.hit("u").allowed and second.hit("u").allowed
    assert not first.hit("u").allowed and not second.hit("u").allowed


def test_clear_does_not_reset_limits_and_reset_does(cache: Cache) -> None:
    limiter = cache.rate_limiter("api", rate="1/hour")
    assert limiter.hit("u").allowed
    cache.set("k", 1)
    cache.clear()
    assert not limiter.hit("u").allowed  # clear() empties the cache, not the limits
    assert limiter.reset("u") is True
    assert limiter.reset("u") is False
    assert limiter.hit("u").allowed


def test_peek_takes_nothing(cache: Cache) -> None:
    limiter = cache.rate_limiter("api", rate="3/hour", algorithm="fixed")
    assert limiter.peek("u").remaining == 3
    limiter.hit("u", cost=2)
    peeked = limiter.peek("u")
    assert peeked.allowed and peeked.remaining == 1
    assert not limiter.peek("u", cost=2).allowed
    assert limiter.hit("u").remaining == 0


async def test_async_api(cache: Cache) -> None:
    limiter = cache.rate_limiter("api", rate="2/hour", algorithm="sliding")
    assert (await limiter.ahit("u")).allowed
    assert (await limiter.apeek("u")).remaining == 1
    assert (await limiter.ahit("u")).allowed and not (await limiter.ahit("u")).allowed
    assert await limiter.areset("u")
    assert (await limiter.ahit("u")).remaining == 1


def test_decisions_are_seconds(cache: Cache) -> None:
    limiter = cache.rate_limiter("api", rate="10/second", burst=2)
    limiter.hit("u")
    allowed = limiter.hit("u")
    refused = limiter.hit("u")
    assert allowed.allowed and allowed.limit == 2 and allowed.remaining == 0
    assert 0.1 < allowed.reset_after <= 0.2 and allowed.retry_after == 0.0
    assert not refused and 0 < refused.retry_after <= 0.1
    assert isinstance(refused.retry_after, float)


def test_decorator_sync(cache: Cache) -> None:
    calls: list[int] = []

    @cache.rate_limit("2/hour", key="{user_id}")
    def view(user_id: int, page: int = 1) -> int:
        calls.append(user_id)
        return user_id * 10

    assert view(1) == 10 and view(1, page=2) == 10
    with pytest.raises(RateLimited) as refused:
        view(1)
    assert calls == [1, 1]  # a refused call does not run
    assert refused.value.decision.retry_after > 0 and refused.value.retry_after > 0
    assert isinstance(refused.value, CacheKitError)
    assert view(2) == 20  # its own allowance
    assert view.limiter.name.endswith("view")  # type: ignore[attr-defined]
    again = pickle.loads(pickle.dumps(refused.value))
    assert again.decision == refused.value.decision and str(again) == str(refused.value)


async def test_decorator_async_and_cost(cache: Cache) -> None:
    @cache.rate_limit("5/hour", cost=2, name="uploads", algorithm="fixed")
    async def upload() -> str:
        return "ok"

    assert [await upload(), await upload()] == ["ok", "ok"]
    with pytest.raises(RateLimited):
        await upload()  # 1 unit left, 2 needed
    assert cache.rate_limiter("uploads", rate="5/hour", algorithm="fixed").peek("*").remaining == 1


def test_bad_arguments(cache: Cache) -> None:
    with pytest.raises(ConfigurationError):
        cache.rate_limiter("api", rate="lots")
    with pytest.raises(ConfigurationError):
        cache.rate_limiter("", rate="1/s")
    with pytest.raises(ConfigurationError):
        cache.rate_limiter("api", rate="1/s", on_error="maybe")
    with pytest.raises(ConfigurationError):
        cache.rate_limiter("api", rate="1/s", algorithm="fixed", burst=3)
    limiter = cache.rate_limiter("api", rate="5/s")
    with pytest.raises(InvalidArgumentError):
        limiter.hit("u", cost=6)  # could never pass: an error, not a refusal forever
    with pytest.raises(InvalidArgumentError):
        limiter.hit("u", cost=0)
    with pytest.raises(cachekit.InvalidKeyError):
        limiter.hit(object())
    with pytest.raises(InvalidArgumentError):

        @cache.rate_limit("5/s", cost=9)
        def f() -> None: ...

    with pytest.raises(ConfigurationError):

        @cache.rate_limit("5/s", key="{nope}")
        def g(user: int) -> None: ...


def test_keys_are_internal_and_hash_tagged(cache: Cache) -> None:
    key = cache.rate_limiter("api", rate="1/s").key("user:42")
    assert key.startswith("#" + cache.namespace.text)  # outside every namespace pattern
    assert "{api:user%3A42}" in key  # one hash tag: one cluster slot


def test_identities_by_value_and_odd_identities(cache: Cache) -> None:
    limiter = cache.rate_limiter("api", rate="1/hour")
    assert limiter.hit(42).allowed
    assert not limiter.hit("42").allowed  # 42 and "42" are one key, as everywhere in cachekit
    for identity in (b"\x80\xff", "x" * 10_000, ("tenant", 7, "user"), "ü{}:%"):
        assert limiter.hit(identity).allowed and not limiter.hit(identity).allowed
    assert limiter.hit("x" * 9_999).allowed  # a long identity is hashed, not truncated


def test_many_identities_in_process_keep_their_limits() -> None:
    """The in-process store sweeps expired states as it grows; live ones stay."""
    cache = Cache("memory://", prefix=f"m{uuid.uuid4().hex[:8]}")
    limiter = cache.rate_limiter("many", rate="1/hour", algorithm="fixed")
    assert all(limiter.hit(i).allowed for i in range(5000))
    assert not any(limiter.hit(i).allowed for i in range(5000))


def test_foreign_state_under_a_limit_key_is_survived(redis_url: str) -> None:
    """Something else wrote the limiter's key: a value that does not parse counts as no
    state; a key of another type is a backend error, answered by on_error, never raised."""
    import redis

    cache = Cache(redis_url, prefix=f"r{uuid.uuid4().hex[:8]}")
    client = redis.Redis.from_url(redis_url)
    for algorithm in ("gcra", "sliding", "fixed"):
        limiter = cache.rate_limiter("api", rate="1/hour", algorithm=algorithm)
        client.set(limiter.key("u"), b"garbage")
        first = limiter.hit("u")
        assert first.allowed and not first.fallback
        assert not limiter.hit("u").allowed  # and from then on it limits again
        client.delete(limiter.key("v"))
        client.hset(limiter.key("v"), "a", "b")
        wrong = limiter.hit("v")
        assert wrong.allowed and wrong.fallback  # on_error="allow"
        denying = cache.rate_limiter("api", rate="1/hour", algorithm=algorithm, on_error="deny")
        assert not denying.hit("v").allowed
    assert cache.stats()["circuit"] == "closed"  # not an outage
    cache.close()
