"""The HTTP cache's keyword options are typed once (cachekit.http: CoalesceOptions,
PolicyOptions, HttpCacheOptions); their defaults stay where they are decided (HttpCache,
HttpCachePolicy). These tests hold the types to those places, and check that the
Starlette adapters pass them on."""

from __future__ import annotations

import dataclasses
import inspect

import pytest

from cachekit import Cache, ConfigurationError
from cachekit.http import (
    CoalesceOptions,
    HttpCache,
    HttpCacheOptions,
    HttpCachePolicy,
    PagePolicyOptions,
    PolicyOptions,
    split_options,
)


def test_the_coalescing_keywords_are_http_caches() -> None:
    params = inspect.signature(HttpCache.__init__).parameters
    own = {n for n, p in params.items() if p.kind is inspect.Parameter.KEYWORD_ONLY}
    assert set(CoalesceOptions.__optional_keys__) == own


def test_the_policy_keywords_are_the_policys_fields_but_its_ttl() -> None:
    fields = {f.name for f in dataclasses.fields(HttpCachePolicy)} - {"default_ttl"}
    assert set(PolicyOptions.__optional_keys__) == fields
    assert HttpCacheOptions.__optional_keys__ == (
        PolicyOptions.__optional_keys__ | CoalesceOptions.__optional_keys__
    )


def test_the_page_keywords_are_the_policys_but_its_key_prefix() -> None:
    """Django's cache_page has a key_prefix of its own: it takes the rest."""
    assert PagePolicyOptions.__optional_keys__ == PolicyOptions.__optional_keys__ - {
        "key_prefix"
    }


def test_djangos_cache_page_takes_them_typed() -> None:
    pytest.importorskip("django")
    from cachekit.integrations.django import cache_page

    options = inspect.signature(cache_page).parameters["options"]
    assert options.kind is inspect.Parameter.VAR_KEYWORD
    assert options.annotation == "Unpack[PagePolicyOptions]"


def test_split_options() -> None:
    policy, coalescing = split_options({"lock_ttl": 5.0, "max_body_size": 10, "coalesce": False})
    assert policy == {"max_body_size": 10}
    assert coalescing == {"lock_ttl": 5.0, "coalesce": False}


def test_starlette_passes_them_on() -> None:
    pytest.importorskip("starlette")
    from cachekit.integrations.starlette import CacheMiddleware, cache_response

    async def app(scope: object, receive: object, send: object) -> None: ...

    cache = Cache()
    middleware = CacheMiddleware(app, cache=cache, lock_ttl=5.0, wait_timeout=1.5, max_body_size=9)
    engine = middleware._engine
    assert (engine.http.lock_ttl, engine.http.wait_timeout) == (5.0, 1.5)
    assert engine.policy.max_body_size == 9
    default = cache_response(cache)._engine.http  # HttpCache's defaults, from one place
    signature = inspect.signature(HttpCache.__init__).parameters
    assert default.lock_ttl == signature["lock_ttl"].default
    assert default.wait_timeout == signature["wait_timeout"].default
    with pytest.raises(ConfigurationError, match="lokc"):
        CacheMiddleware(app, cache=cache, lokc=True)  # type: ignore[call-arg]
