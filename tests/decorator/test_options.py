"""The keyword arguments of @cached and get_or_set are typed once (decorator/types.py:
StampedeKeywords, CachedOptions); their defaults and checks live once
(StampedeOptions.build, decorate). These tests hold the types and those places together,
and check what a caller sees at run time."""

from __future__ import annotations

import asyncio
import inspect

import pytest

from cachekit import Cache, ConfigurationError, cached
from cachekit.decorator.decorate import decorate
from cachekit.decorator.types import CachedOptions, StampedeKeywords
from cachekit.stampede.rules import StampedeOptions


def test_the_stampede_keywords_are_exactly_what_build_takes() -> None:
    built = set(inspect.signature(StampedeOptions.build).parameters) - {"ttl"}
    assert set(StampedeKeywords.__optional_keys__) == built
    assert not StampedeKeywords.__required_keys__


def test_the_cached_options_are_decorates_and_the_stampedes() -> None:
    params = inspect.signature(decorate).parameters
    own = {n for n, p in params.items() if p.kind is inspect.Parameter.KEYWORD_ONLY}
    assert params["stampede_options"].kind is inspect.Parameter.VAR_KEYWORD
    assert set(CachedOptions.__optional_keys__) == own | StampedeKeywords.__optional_keys__
    assert not CachedOptions.__required_keys__


def test_a_misspelt_option_is_a_type_error_naming_it() -> None:
    cache = Cache()
    with pytest.raises(TypeError, match="'lokc'"):
        cache.cached(ttl=60, lokc=True)  # type: ignore[call-overload]
    with pytest.raises(TypeError, match="stale_tll"):
        cached(stale_tll=1)  # type: ignore[call-overload]
    with pytest.raises(TypeError, match="lock_tll"):
        cache.get_or_set("k", lambda: 1, lock_tll=5)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="early_refesh"):
        asyncio.run(cache.aget_or_set("k", lambda: 1, early_refesh=True))  # type: ignore[call-arg]
    assert cache.get("k") is None  # nothing computed or stored for a bad call


@pytest.mark.parametrize(
    "bad", [{"lock_ttl": -1}, {"lock_timeout": -1.0}, {"stale_ttl": -5}, {"early_refresh": -1}]
)
def test_bad_stampede_values_are_refused_by_get_or_set_as_by_cached(bad: dict[str, float]) -> None:
    cache = Cache()
    with pytest.raises(ConfigurationError):
        cache.cached(**bad)(lambda: 1)  # type: ignore[call-overload]
    with pytest.raises(ConfigurationError):
        cache.get_or_set("k", lambda: 1, **bad)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        asyncio.run(cache.aget_or_set("k", lambda: 1, **bad))  # type: ignore[arg-type]


def test_get_or_set_takes_the_stampede_path_only_when_an_option_asks() -> None:
    cache = Cache()
    calls: list[int] = []

    def load() -> int:
        calls.append(1)
        return len(calls)

    # lock_ttl alone protects nothing: the plain path, the value stored
    assert cache.get_or_set("plain", load, 60, lock_ttl=5.0) == 1
    assert cache.get_or_set("plain", load, 60, lock_ttl=5.0) == 1
    assert cache.get_or_set("locked", load, 60, lock=True) == 2
    assert cache.get_or_set("locked", load, 60, lock=True) == 2
    assert cache.get_or_set("stale", load, 60, stale_ttl=5) == 3
    assert cache._flights.sync_drivers  # the stampede driver served the last two
    assert calls == [1, 1, 1]
