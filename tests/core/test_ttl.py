"""cache.ttl(key): seconds left, None for "no expiry", and ``default`` (None) for "no such
entry", so callers that must tell the two apart pass ``default=MISSING``."""

from __future__ import annotations

from cachekit import MISSING, Cache


def test_ttl_tells_missing_from_no_expiry_when_asked(any_cache: Cache) -> None:
    any_cache.set("forever", 1, ttl=None)
    any_cache.set("brief", 1, ttl=60)
    assert any_cache.ttl("forever") is None
    assert any_cache.ttl("absent") is None  # the contract: None for both, by default
    assert any_cache.ttl("forever", default=MISSING) is None
    assert any_cache.ttl("absent", default=MISSING) is MISSING
    assert any_cache.ttl("absent", default=-2) == -2  # Redis' own convention, if you like
    left = any_cache.ttl("brief", default=MISSING)
    assert isinstance(left, float) and 0 < left <= 60


async def test_attl_the_same(any_cache: Cache) -> None:
    await any_cache.aset("forever", 1, ttl=None)
    assert await any_cache.attl("forever", default=MISSING) is None
    assert await any_cache.attl("absent", default=MISSING) is MISSING
    assert await any_cache.attl("absent") is None
