"""cachekit.http: pure HTTP caching decisions, no backend, no event loop."""

from __future__ import annotations

from email.utils import formatdate

import pytest

from cachekit import ConfigurationError
from cachekit.http import (
    DEFAULT_POLICY,
    CachedResponse,
    Forward,
    Hit,
    HttpCachePolicy,
    Read,
    Request,
    Response,
    StoreDecision,
    VaryMarker,
    begin,
    cache_key,
    cookie_globs,
    identifying_cookies,
    invalidation_key,
    is_hashed,
    load,
    mark_miss,
    miss_reason,
    parse_cache_control,
    path_globs,
    path_purge_tag,
    primary_key,
    request_is_cacheable,
    serve,
    storable,
    store_precheck,
    url_tags,
)

NOW = 1_700_000_000.0


def http_date(when: float) -> str:
    return formatdate(when, usegmt=True)


def get(
    path: str = "/", query: str = "", headers: dict[str, str] | None = None, method: str = "GET"
) -> Request:
    return Request(method, "http", "example.com", path, query, list((headers or {}).items()))


def ok(*headers: tuple[str, str], body: bytes = b"hello", status: int = 200) -> Response:
    return Response(status, list(headers), body)


def store(
    req: Request, resp: Response, policy: HttpCachePolicy = DEFAULT_POLICY, now: float = NOW
) -> StoreDecision:
    decision = storable(req, resp, policy, now)
    assert isinstance(decision, StoreDecision), decision
    return decision


def header(resp: Response, name: str) -> str | None:
    return resp.header(name)


# ------------------------------------------------------------ parse_cache_control


def test_parse_cache_control_is_case_insensitive_and_tolerates_spacing() -> None:
    assert parse_cache_control(" Max-Age = 60 ,,NO-CACHE ,  public") == {
        "max-age": "60",
        "no-cache": None,
        "public": None,
    }


def test_parse_cache_control_unquotes_and_keeps_commas_in_quotes() -> None:
    parsed = parse_cache_control('private="Set-Cookie, X-Foo", ext="a\\"b", max-age=5')
    assert parsed == {"private": "Set-Cookie, X-Foo", "ext": 'a"b', "max-age": "5"}


def test_parse_cache_control_first_duplicate_wins() -> None:
    assert parse_cache_control("max-age=10, max-age=99")["max-age"] == "10"


@pytest.mark.parametrize(
    "value",
    [None, "", ",", "=", '"', 'a="unterminated, b', "é=☃", "max-age=" + "9" * 5000, "\x00\x01,\t"],
)
def test_parse_cache_control_never_raises(value: str | None) -> None:
    assert isinstance(parse_cache_control(value), dict)


# -------------------------------------------------------------- request decisions


def test_only_get_and_head_are_looked_up() -> None:
    assert request_is_cacheable(get()).lookup
    assert request_is_cacheable(get(method="head")).lookup
    post = request_is_cacheable(get(method="POST"))
    assert (post.lookup, post.store, post.fwd) == (False, False, "method")


def test_method_outside_policy_is_bypassed() -> None:
    decision = request_is_cacheable(get(method="HEAD"), HttpCachePolicy(methods={"GET"}))
    assert (decision.lookup, decision.fwd) == (False, "bypass")


def test_request_no_store_looks_up_but_does_not_store() -> None:
    decision = request_is_cacheable(get(headers={"Cache-Control": "no-store"}))
    assert (decision.lookup, decision.store) == (True, False)
    assert storable(get(headers={"Cache-Control": "no-store"}), ok(), DEFAULT_POLICY, NOW) == (
        "request no-store"
    )


@pytest.mark.parametrize("value", ["no-cache", "max-age=0", "MAX-AGE = 0"])
def test_request_no_cache_is_a_miss_that_may_store(value: str) -> None:
    decision = request_is_cacheable(get(headers={"Cache-Control": value}))
    assert (decision.lookup, decision.store, decision.fwd) == (False, True, "request")


# -------------------------------------------------------------------------- keys


def test_head_shares_the_get_key() -> None:
    assert cache_key(get(method="HEAD")) == cache_key(get())
    assert primary_key(get()) == cache_key(get())


def test_unsafe_methods_invalidate_the_uri() -> None:
    assert invalidation_key(get(method="POST"), 201, "p:") == primary_key(get(), "p:")
    assert invalidation_key(get(method="delete"), 302) == primary_key(get())
    assert invalidation_key(get(method="POST"), 500) is None
    assert invalidation_key(get(method="POST"), 404) is None
    assert invalidation_key(get(), 200) is None
    assert invalidation_key(get(method="HEAD"), 200) is None


def test_host_and_scheme_are_normalised_and_default_ports_dropped() -> None:
    def key(scheme: str, host: str) -> str:
        return primary_key(Request("GET", scheme, host, "/"))

    assert key("HTTP", "Example.COM:80") == key("http", "example.com")
    assert key("https", "example.com:443") == key("https", "example.com")
    assert key("http", "example.com:8080") != key("http", "example.com")
    assert key("https", "example.com") != key("http", "example.com")
    assert key("http", "[::1]:80") == key("http", "[::1]")


def test_host_falls_back_to_the_host_header() -> None:
    from_header = Request("GET", "http", "", "/", headers=[("Host", "example.com")])
    assert primary_key(from_header) == primary_key(get())


def test_prefix_and_path_are_in_the_key() -> None:
    assert primary_key(get("/a"), "shop:") == "shop:http:GET:http://example.com/a"
    assert primary_key(get("/a")) != primary_key(get("/b"))


@pytest.mark.parametrize(
    ("one", "two"),
    [
        ("/caf%c3%a9", "/café"),
        ("/a%7e", "/a~"),
        ("/a%2f", "/a%2F"),
        ("/a b", "/a%20b"),
        ("", "/"),
    ],
)
def test_equivalent_paths_share_a_key(one: str, two: str) -> None:
    assert primary_key(get(one)) == primary_key(get(two))


def test_encoded_slash_is_not_a_slash() -> None:
    assert primary_key(get("/a%2Fb")) != primary_key(get("/a/b"))


@pytest.mark.parametrize("path", ["/" + "é" * 5000, "/a b\x00\n{tag}", "/\udcff", "/%zz%"])
def test_odd_paths_give_short_safe_keys(path: str) -> None:
    key = primary_key(get(path), "p:")
    assert key.startswith("p:http:") and len(key) <= 210
    assert key.isascii() and key.isprintable() and " " not in key
    assert "{" not in key  # a Redis Cluster hash tag must not come from the URL


def test_long_urls_are_hashed_and_still_distinct() -> None:
    one, two = primary_key(get("/" + "a" * 1000)), primary_key(get("/" + "a" * 999 + "b"))
    assert one != two and len(one) <= 210 and "sha256:" in one


def test_keys_count_the_prefix_so_the_cache_never_shortens_them() -> None:
    # Cache shortens user keys over 200 characters into a digest of its own, which no
    # glob and no url_tags could reach: the HTTP key must hash first, prefix included.
    path = "/" + "a" * 150
    assert not is_hashed(primary_key(get(path)))
    assert is_hashed(primary_key(get(path), "p" * 30), "p" * 30)
    assert len(primary_key(get(path), "p" * 30)) <= 200


@pytest.mark.parametrize("length", range(150, 231, 5))
def test_http_keys_are_never_shortened_by_the_cache(length: int) -> None:
    from cachekit import Cache

    cache = Cache("memory://", prefix="ns")
    for prefix in ("", "site:", "p" * 40):
        key = primary_key(get("/" + "a" * length), prefix)
        assert cache.make_key(key) == cache.namespace.text + key, (length, prefix)


LONG_PATH = "/reports/" + "x" * 150 + "/detail"
LONG_QUERY = "q=" + "y" * 200


@pytest.mark.parametrize(
    ("pattern", "host"),
    [
        (LONG_PATH, None),
        (LONG_PATH, "Example.COM"),
        ("/reports/*", None),
        ("/reports/*", "example.com"),
        ("/reports", None),  # the exact path, any query
        ("/rep*", None),
        ("/*", "example.com"),
        ("/*/detail", None),
        ("/", None),
    ],
)
def test_a_purge_pattern_covers_entries_with_hashed_keys(pattern: str, host: str | None) -> None:
    path = "/reports" if pattern == "/reports" else "/" if pattern == "/" else LONG_PATH
    req = get(path, LONG_QUERY)
    decision = store(req, ok(("Cache-Tag", "mine")))
    assert is_hashed(decision.key, "") and len(decision.key) <= 200
    assert decision.tags[0] == "mine" and set(decision.url_tags) == set(url_tags(req))
    assert path_purge_tag(pattern, host) in decision.tags


@pytest.mark.parametrize(
    ("pattern", "host"),
    [
        ("/other/*", None),
        ("/reports/*", "other.example"),
        ("/reportsX", None),
        ("/reports", None),
        ("/x", None),
    ],
)
def test_a_purge_pattern_spares_hashed_entries_it_cannot_match(
    pattern: str, host: str | None
) -> None:
    decision = store(get(LONG_PATH, LONG_QUERY), ok())
    assert path_purge_tag(pattern, host) not in decision.tags


def test_deep_paths_are_indexed_down_to_six_directories() -> None:
    deep = "/" + "/".join("abcdefghij") + "/" + "z" * 200
    tags = store(get(deep), ok()).tags
    assert len(tags) == 2 * (7 + 1)  # "/", six directories, the exact path; +- host
    assert path_purge_tag(deep) in tags
    assert path_purge_tag("/a/b/c/*") == "http-path:/a/b/c/" and "http-path:/a/b/c/" in tags
    assert path_purge_tag("/a/b/c/d/e/f/g/h/*") == "http-path:/a/b/c/d/e/f/" in tags


def test_short_keys_carry_no_url_tags_and_are_matched_by_globs() -> None:
    decision = store(get("/reports/1", "a=1"), ok())
    assert decision.url_tags == () and decision.tags == ()
    assert path_globs("/reports/*") == ["http:GET:*://*/reports/*"]
    assert path_globs("/caf\u00e9", "Example.com", "p:") == [
        "p:http:GET:*://example.com/caf%C3%A9",
        "p:http:GET:*://example.com/caf%C3%A9[?#]*",
    ]
    with pytest.raises(ValueError, match="starts with '/'"):
        path_globs("reports/*")


def test_vary_variants_of_long_urls_are_tagged_too() -> None:
    path = "/" + "v" * 170  # the primary key fits, the variant key (+ 33 chars) does not
    decision = store(get(path, headers={"accept": "a"}), ok(("Vary", "Accept")))
    assert not is_hashed(decision.primary_key) and is_hashed(decision.key)
    assert path_purge_tag(path) in decision.tags


def test_query_is_sorted_by_name_keeping_duplicate_order() -> None:
    assert primary_key(get(query="b=1&a=2")) == primary_key(get(query="a=2&b=1"))
    assert primary_key(get(query="a=1&a=2")) != primary_key(get(query="a=2&a=1"))
    assert primary_key(get(query="a=1&b=x&a=2")) == primary_key(get(query="b=x&a=1&a=2"))
    assert primary_key(get(query="a=1&&b=2")) == primary_key(get(query="b=2&a=1"))


def test_query_blank_values_are_kept() -> None:
    keys = {primary_key(get(query=q)) for q in ("", "a", "a=", "a=0")}
    assert len(keys) == 4


def test_query_spaces_and_encodings_are_normalised() -> None:
    assert primary_key(get(query="q=a+b")) == primary_key(get(query="q=a%20b"))
    assert primary_key(get(query="q=a b")) == primary_key(get(query="q=a%20b"))
    assert primary_key(get(query="q=a%2Bb")) != primary_key(get(query="q=a+b"))
    assert primary_key(get(query="q=é")) == primary_key(get(query="q=%C3%A9"))


def test_vary_values_select_the_key() -> None:
    gzip = get(headers={"Accept-Encoding": "gzip"})
    br = get(headers={"Accept-Encoding": "br"})
    assert cache_key(gzip, ["Accept-Encoding"]) != cache_key(br, ["Accept-Encoding"])
    assert cache_key(gzip, ["Accept-Encoding"]) != primary_key(gzip)
    assert cache_key(gzip) == cache_key(br)  # without vary names, headers don't matter
    # names are case-insensitive and unordered; list whitespace is not significant
    both = get(headers={"Accept-Encoding": "gzip,br", "Accept-Language": "fr"})
    same = get(headers={"accept-language": "fr", "accept-encoding": "gzip, br"})
    assert cache_key(both, ["Accept-Encoding", "accept-language"]) == cache_key(
        same, ["ACCEPT-LANGUAGE", "accept-encoding"]
    )


def test_vary_missing_header_differs_from_empty_header() -> None:
    missing, empty = get(), get(headers={"X-Flag": ""})
    assert cache_key(missing, ["X-Flag"]) != cache_key(empty, ["X-Flag"])
    assert cache_key(missing, ["X-Flag"]) == cache_key(get(), ["x-flag"])


# ---------------------------------------------------------------- store decisions


def test_plain_200_is_stored_for_the_default_ttl() -> None:
    decision = store(get(), ok(("Content-Type", "text/plain")))
    assert decision.ttl == 60 and decision.key == primary_key(get())
    assert decision.writes() == [(decision.key, decision.data, 60)]
    assert decision.entry.body == b"hello" and decision.entry.stored_at == NOW


@pytest.mark.parametrize(
    ("cache_control", "reason"),
    [
        ("no-store", "no-store"),
        ("max-age=60, No-Store", "no-store"),
        ("no-cache", "no-cache"),
        ('no-cache="Set-Cookie"', "no-cache"),
        ("private", "private"),
        ("private, max-age=60", "private"),
        ("max-age=0", "stale"),
        ("s-maxage=0, max-age=60", "stale"),
    ],
)
def test_response_directives_prevent_storing(cache_control: str, reason: str) -> None:
    assert storable(get(), ok(("Cache-Control", cache_control)), DEFAULT_POLICY, NOW) == reason


def test_private_ok_policy_stores_private() -> None:
    decision = store(
        get(), ok(("Cache-Control", "private, max-age=5")), HttpCachePolicy(private_ok=True)
    )
    assert decision.ttl == 5


@pytest.mark.parametrize(
    ("headers", "lifetime"),
    [
        ([("Cache-Control", "max-age=100, s-maxage=30")], 30),
        ([("Cache-Control", "max-age=100"), ("Expires", http_date(NOW + 500))], 100),
        ([("Date", http_date(NOW)), ("Expires", http_date(NOW + 300))], 300),
        ([("Expires", http_date(NOW + 200))], 200),
        ([("Cache-Control", "max-age=abc"), ("Expires", http_date(NOW + 200))], 200),
        ([("Cache-Control", "max-age=-5, public")], 60),
        ([("Cache-Control", "max-age=" + "9" * 30)], 2**31),
    ],
)
def test_freshness_lifetime_precedence(headers: list[tuple[str, str]], lifetime: float) -> None:
    decision = store(get(), ok(*headers))
    assert decision.entry.lifetime == lifetime and decision.ttl == lifetime


def test_expires_is_relative_to_date() -> None:
    resp = ok(("Date", http_date(NOW - 10)), ("Expires", http_date(NOW + 290)))
    decision = store(get(), resp)
    assert decision.entry.lifetime == 300 and decision.entry.initial_age == 10
    assert decision.ttl == 290


def test_date_in_the_past_counts_as_age() -> None:
    decision = store(get(), ok(("Cache-Control", "max-age=100"), ("Date", http_date(NOW - 10))))
    assert decision.entry.lifetime == 100 and decision.entry.initial_age == 10
    assert decision.ttl == 90


@pytest.mark.parametrize("expires", ["0", "garbage", http_date(NOW - 1)])
def test_invalid_or_past_expires_is_not_stored(expires: str) -> None:
    assert storable(get(), ok(("Expires", expires)), DEFAULT_POLICY, NOW) == "stale"


def test_no_default_ttl_needs_explicit_freshness() -> None:
    policy = HttpCachePolicy(default_ttl=None)
    assert storable(get(), ok(), policy, NOW) == "no freshness"
    assert store(get(), ok(("Cache-Control", "max-age=7")), policy).ttl == 7


def test_upstream_age_is_accounted_and_not_stored() -> None:
    decision = store(get(), ok(("Cache-Control", "max-age=100"), ("Age", "30")))
    assert decision.ttl == 70 and decision.entry.initial_age == 30
    assert "age" not in {name.lower() for name, _ in decision.entry.headers}
    assert (
        storable(get(), ok(("Cache-Control", "max-age=100"), ("Age", "100")), DEFAULT_POLICY, NOW)
        == "stale"
    )
    delayed = storable(
        get(),
        ok(("Cache-Control", "max-age=100"), ("Age", "30")),
        DEFAULT_POLICY,
        NOW,
        request_time=NOW - 5,
    )
    assert isinstance(delayed, StoreDecision) and delayed.ttl == 65


def test_statuses() -> None:
    assert storable(get(), ok(status=404), DEFAULT_POLICY, NOW) == "status"
    with_404 = HttpCachePolicy(cacheable_statuses={200, 404, 204})
    assert store(get(), ok(status=404), with_404).entry.status == 404
    no_content = store(get(), ok(body=b"", status=204), with_404)
    assert no_content.entry.headers == ()  # no Content-Length on a 204
    always_refused = HttpCachePolicy(cacheable_statuses={206, 304})
    assert storable(get(), ok(status=206), always_refused, NOW) == "status"
    assert storable(get(), ok(status=304), always_refused, NOW) == "status"


def test_only_get_responses_are_stored() -> None:
    assert storable(get(method="HEAD"), ok(), DEFAULT_POLICY, NOW) == "method"
    assert storable(get(method="POST"), ok(), DEFAULT_POLICY, NOW) == "method"


def test_vary_star_and_set_cookie_are_not_stored() -> None:
    assert storable(get(), ok(("Vary", "Accept, *")), DEFAULT_POLICY, NOW) == "vary *"
    assert storable(get(), ok(("Set-Cookie", "a=b")), DEFAULT_POLICY, NOW) == "set-cookie"
    assert (
        storable(get(), ok(("set-cookie", "a=b"), ("Cache-Control", "public")), DEFAULT_POLICY, NOW)
        == "set-cookie"
    )


@pytest.mark.parametrize(
    ("cache_control", "stored"),
    [
        ("max-age=60", False),
        ("public", True),
        ("s-maxage=60", True),
        ("must-revalidate, max-age=60", True),
    ],
)
def test_authorization_needs_explicit_permission(cache_control: str, stored: bool) -> None:
    req = get(headers={"Authorization": "Bearer x"})
    decision = storable(req, ok(("Cache-Control", cache_control)), DEFAULT_POLICY, NOW)
    assert isinstance(decision, StoreDecision) is stored
    if not stored:
        assert decision == "authorization"


def test_body_size_limit() -> None:
    policy = HttpCachePolicy(max_body_size=4)
    assert storable(get(), ok(body=b"12345"), policy, NOW) == "too large"
    assert store(get(), ok(body=b"1234"), policy).entry.body == b"1234"
    assert store_precheck(get(), 200, [("Content-Length", "5")], policy) == "too large"
    assert store_precheck(get(), 200, [("Content-Length", "4")], policy) is None
    assert store_precheck(get(), 200, [("Set-Cookie", "a")]) == "set-cookie"


def test_hop_by_hop_headers_are_removed_and_length_fixed() -> None:
    resp = ok(
        ("Connection", "keep-alive, X-Secret"),
        ("Keep-Alive", "timeout=5"),
        ("Transfer-Encoding", "chunked"),
        ("X-Secret", "1"),
        ("Upgrade", "h2c"),
        ("Content-Length", "999"),
        ("X-Kept", "yes"),
        ("X-Kept", "twice"),
    )
    headers = store(get(), resp).entry.headers
    assert headers == (("X-Kept", "yes"), ("X-Kept", "twice"), ("Content-Length", "5"))


def test_tag_header_is_parsed_and_stripped() -> None:
    resp = ok(("Cache-Tag", " users, user:42 ,,users"), ("cache-tag", "pages"))
    decision = store(get(), resp)
    assert decision.entry.tags == ("users", "user:42", "pages")
    assert all(name.lower() != "cache-tag" for name, _ in decision.entry.headers)
    custom = store(get(), ok(("Surrogate-Key", "a")), HttpCachePolicy(tag_header="Surrogate-Key"))
    assert custom.entry.tags == ("a",)
    sent = mark_miss(resp.headers, True)
    assert all(name.lower() != "cache-tag" for name, _ in sent)


def test_etag_from_body() -> None:
    plain = store(get(), ok())
    assert plain.entry.etag is None
    policy = HttpCachePolicy(etag_from_body=True)
    entry = store(get(), ok(), policy).entry
    assert (
        entry.etag is not None
        and entry.etag.startswith('"')
        and ("ETag", entry.etag) in (entry.headers)
    )
    assert store(get(), ok(body=b"other"), policy).entry.etag != entry.etag
    assert store(get(), ok(("ETag", '"v1"')), policy).entry.etag == '"v1"'


def test_vary_response_writes_marker_and_variant() -> None:
    req = get(headers={"Accept-Encoding": "gzip"})
    decision = store(req, ok(("Vary", "Accept-Encoding"), ("Cache-Control", "max-age=30")))
    assert decision.marker == VaryMarker(("accept-encoding",))
    assert decision.entry.vary_values == ("gzip",)
    assert decision.key == cache_key(req, ["accept-encoding"]) != decision.primary_key
    (marker_key, marker_data, marker_ttl), (key, data, ttl) = decision.writes()
    assert (marker_key, key, marker_ttl, ttl) == (primary_key(req), decision.key, 30, 30)
    assert load(marker_data) == decision.marker and load(data) == decision.entry


# -------------------------------------------------------------------------- serve


def entry_for(
    *headers: tuple[str, str], body: bytes = b"hello", status: int = 200, req: Request | None = None
) -> CachedResponse:
    policy = HttpCachePolicy(cacheable_statuses={200, 404})
    return store(req or get(), ok(*headers, body=body, status=status), policy).entry


def test_hit_adds_age_and_cache_status() -> None:
    entry = entry_for(("Cache-Control", "max-age=100"), ("Age", "10"))
    resp = serve(entry, get(), NOW + 25.7)
    assert resp.status == 200 and resp.body == b"hello"
    assert header(resp, "Age") == "35"
    assert header(resp, "Cache-Status") == "cachekit; hit; ttl=64"
    assert header(resp, "Content-Length") == "5"
    named = serve(entry, get(), NOW, cache_name="edge cache")
    assert header(named, "Cache-Status") == '"edge cache"; hit; ttl=90'


def test_head_hit_has_headers_and_no_body() -> None:
    resp = serve(entry_for(("X-A", "1")), get(method="HEAD"), NOW)
    assert resp.status == 200 and resp.body == b""
    assert header(resp, "Content-Length") == "5" and header(resp, "X-A") == "1"


@pytest.mark.parametrize(
    ("if_none_match", "status"),
    [
        ('"v1"', 304),
        ('W/"v1"', 304),
        ('"v0", "v1"', 304),
        ("*", 304),
        ('"v2"', 200),
        ("v1", 200),
        ("", 200),
    ],
)
def test_if_none_match(if_none_match: str, status: int) -> None:
    entry = entry_for(("ETag", 'W/"v1"'), ("Cache-Control", "max-age=60"), ("X-Other", "x"))
    resp = serve(entry, get(headers={"If-None-Match": if_none_match}), NOW)
    assert resp.status == status
    if status == 304:
        assert resp.body == b""
        assert {name for name, _ in resp.headers} == {
            "ETag",
            "Cache-Control",
            "Age",
            "Cache-Status",
        }


def test_if_none_match_takes_precedence_over_if_modified_since() -> None:
    entry = entry_for(("ETag", '"v1"'), ("Last-Modified", http_date(NOW - 100)))
    req = get(headers={"If-None-Match": '"v2"', "If-Modified-Since": http_date(NOW)})
    assert serve(entry, req, NOW).status == 200


@pytest.mark.parametrize(
    ("since", "status"),
    [
        (http_date(NOW - 100), 304),
        (http_date(NOW - 50), 304),
        (http_date(NOW - 101), 200),
        ("not a date", 200),
        ("", 200),
    ],
)
def test_if_modified_since(since: str, status: int) -> None:
    entry = entry_for(
        ("Last-Modified", http_date(NOW - 100)),
        ("Date", http_date(NOW)),
        ("Expires", http_date(NOW + 60)),
        ("Content-Location", "/x"),
        ("Vary", "X-V"),
        ("Content-Type", "text/plain"),
    )
    resp = serve(entry, get(headers={"If-Modified-Since": since}), NOW)
    assert resp.status == status
    if status == 304:
        assert {name for name, _ in resp.headers} == {
            "Last-Modified",
            "Date",
            "Expires",
            "Content-Location",
            "Vary",
            "Age",
            "Cache-Status",
        }


def test_if_modified_since_falls_back_to_date() -> None:
    entry = entry_for(("Date", http_date(NOW - 10)))
    assert serve(entry, get(headers={"If-Modified-Since": http_date(NOW - 5)}), NOW).status == 304
    assert serve(entry, get(headers={"If-Modified-Since": http_date(NOW - 20)}), NOW).status == 200


def test_conditionals_ignored_for_non_2xx_entries() -> None:
    entry = entry_for(("ETag", '"v1"'), status=404)
    assert serve(entry, get(headers={"If-None-Match": '"v1"'}), NOW).status == 404


# -------------------------------------------------------------------- miss_reason


def test_miss_reasons() -> None:
    entry = entry_for(("Cache-Control", "max-age=100"))
    assert miss_reason(entry, get(), NOW + 99) is None
    assert miss_reason(entry, get(), NOW + 100) == "stale"
    assert miss_reason(entry, get(headers={"Cache-Control": "max-age=10"}), NOW + 11) == "request"
    assert miss_reason(entry, get(headers={"Cache-Control": "max-age=10"}), NOW + 9) is None
    assert miss_reason(entry, get(headers={"Cache-Control": "min-fresh=50"}), NOW + 60) == (
        "request"
    )
    assert miss_reason(entry, get(headers={"Cache-Control": "no-cache"}), NOW) == "request"
    assert miss_reason(entry, get(headers={"Cache-Control": "max-age=0"}), NOW) == "request"


def test_authorized_request_is_served_only_what_allows_it() -> None:
    authorized = get(headers={"Authorization": "Basic x"})
    assert miss_reason(entry_for(("Cache-Control", "max-age=60")), authorized, NOW) == "request"
    assert miss_reason(entry_for(("Cache-Control", "public")), authorized, NOW) is None


def test_vary_mismatch_is_a_vary_miss() -> None:
    req = get(headers={"Accept-Language": "fr"})
    entry = entry_for(("Vary", "Accept-Language"), req=req)
    assert miss_reason(entry, req, NOW) is None
    assert miss_reason(entry, get(headers={"Accept-Language": "de"}), NOW) == "vary-miss"
    assert miss_reason(entry, get(), NOW) == "vary-miss"


# ------------------------------------------------------------------------ cookies


def test_identifying_cookies_are_all_but_the_ignored_and_varied() -> None:
    policy = HttpCachePolicy(ignore_cookies=("_ga*", "consent"), vary_cookies=("lang",))
    req = get(headers={"Cookie": "_ga=1; _ga_X=2;consent=yes; lang=fr; sid=abc; Lang=x"})
    assert identifying_cookies(req, policy) == ("sid", "Lang")  # names are case-sensitive
    assert identifying_cookies(get(headers={"Cookie": "_ga=1"}), policy) == ()
    assert identifying_cookies(get(), policy) == ()
    # joined Cookie fields (HTTP/2) and a nameless piece still count
    assert identifying_cookies(get(headers={"Cookie": "_ga=1, sid=2"}), policy) == ("sid",)
    assert identifying_cookies(get(headers={"Cookie": "secret"}), policy) == ("secret",)


def test_a_request_with_a_cookie_is_served_only_public_or_cookie_keyed_entries() -> None:
    with_cookie = get(headers={"Cookie": "sid=alice"})
    assert miss_reason(entry_for(("Cache-Control", "max-age=60")), with_cookie, NOW) == "bypass"
    assert miss_reason(entry_for(("Cache-Control", "public")), with_cookie, NOW) is None
    keyed = entry_for(("Vary", "Cookie"), req=with_cookie)
    assert miss_reason(keyed, with_cookie, NOW) is None
    ignoring = HttpCachePolicy(ignore_cookies=("sid",))
    assert miss_reason(entry_for(), with_cookie, NOW, ignoring) is None


def test_a_response_to_a_request_with_a_cookie_is_stored_only_if_shared() -> None:
    with_cookie = get(headers={"Cookie": "sid=alice"})
    assert storable(with_cookie, ok(), DEFAULT_POLICY, NOW) == "cookie"
    assert store_precheck(with_cookie, 200, []) == "cookie"
    assert isinstance(storable(with_cookie, ok(("Cache-Control", "public")), DEFAULT_POLICY, NOW),
                      StoreDecision)  # fmt: skip
    assert isinstance(storable(with_cookie, ok(("Vary", "cookie")), DEFAULT_POLICY, NOW),
                      StoreDecision)  # fmt: skip
    ignoring = HttpCachePolicy(ignore_cookies=("s*",))
    assert isinstance(storable(with_cookie, ok(), ignoring, NOW), StoreDecision)


def test_vary_cookies_give_each_value_its_own_key_and_keep_other_cookies_out() -> None:
    policy = HttpCachePolicy(vary_cookies=("lang", "pref_*"), ignore_cookies=("_ga",))
    fr = store(get(headers={"Cookie": "lang=fr; _ga=1"}), ok(), policy)
    assert fr.marker is not None and "cookie=lang" in fr.marker.names
    assert fr.marker.names == ("cookie=lang", "cookie=pref_*")
    keys = {
        store(get(headers={"Cookie": cookie}), ok(), policy).key
        for cookie in ("lang=fr", "lang=de", "", "lang=", "pref_a=1", "pref_a=1; pref_b=2")
    }
    assert len(keys) == 6
    assert store(get(headers={"Cookie": "_ga=2; lang=fr"}), ok(), policy).key == fr.key
    # the lookup: marker, then the variant of this request's values
    step = begin(get(headers={"Cookie": "_ga=9; lang=fr"}), policy)
    assert isinstance(step, Read)
    variant = step.feed(fr.marker.to_bytes(), NOW)
    assert isinstance(variant, Read) and variant.key == fr.key
    assert isinstance(variant.feed(fr.data, NOW), Hit)
    other = begin(get(headers={"Cookie": "lang=de"}), policy)
    assert isinstance(other, Read)
    other_variant = other.feed(fr.marker.to_bytes(), NOW)
    assert isinstance(other_variant, Read) and other_variant.key != fr.key


@pytest.mark.parametrize(
    "bad", ["_ga", b"x", 3, [""], ["a b"], ["a;b"], ["a=b"], ["a,b"], [None], ['a"']]
)
def test_cookie_globs_refuse_what_is_not_a_list_of_names(bad: object) -> None:
    with pytest.raises(ConfigurationError):
        cookie_globs(bad)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        HttpCachePolicy(ignore_cookies=bad)  # type: ignore[arg-type]


def test_cookie_globs_normalise_to_a_tuple() -> None:
    assert cookie_globs(["a", "b*", "a"]) == ("a", "b*")
    assert HttpCachePolicy(vary_cookies=["lang"]).vary_cookies == ("lang",)  # type: ignore[arg-type]


# ---------------------------------------------------------------------- mark_miss


def test_mark_miss_values() -> None:
    assert mark_miss([], True)[-1] == ("Cache-Status", "cachekit; fwd=miss; stored")
    assert mark_miss([], False, "uri-miss")[-1] == ("Cache-Status", "cachekit; fwd=uri-miss")
    assert mark_miss([], False, "bypass")[-1] == ("Cache-Status", "cachekit; fwd=bypass")
    upstream = mark_miss([("Cache-Status", "origin; fwd=miss")], False)
    assert upstream[0] == ("Cache-Status", "origin; fwd=miss")  # ours is appended last
    assert ("ETag", '"x"') in mark_miss([], True, etag='"x"')
    assert mark_miss([("etag", '"a"')], True, etag='"x"') == [
        ("etag", '"a"'),
        ("Cache-Status", "cachekit; fwd=miss; stored"),
    ]


# -------------------------------------------------------------------- serialising


def test_entry_round_trip() -> None:
    entry = CachedResponse(
        200,
        (
            ("Content-Type", "text/plain; charset=utf-8"),
            ("X-Dup", "1"),
            ("X-Dup", "2"),
            ("X-Uni", "é☃"),
        ),
        b"\x00\xffbinary",
        NOW,
        60.0,
        1.5,
        ("a", "b"),
        ("accept", "x-missing"),
        ("text/html", None),
        '"e"',
        NOW - 100,
    )
    assert CachedResponse.from_bytes(entry.to_bytes()) == entry
    assert load(entry.to_bytes()) == entry
    empty = CachedResponse(204, (), b"", NOW, 1.0)
    assert load(empty.to_bytes()) == empty


@pytest.mark.parametrize(
    "data",
    [
        None,
        b"",
        b"junk",
        b"CKH1",
        b"CKH1\x00\x00\x00\x05[1,2]",
        b"CKH1\x00\x00\x00\x02{}",
        b"CKV1[1]",
        b"CKV1{",
        b"CKH1\x00\x00\x00\x26" + b'[200,[["a"]],0,0,0,[],[],[],null,null]',
    ],
)
def test_load_refuses_corrupt_values(data: bytes | None) -> None:
    assert load(data) is None


def test_marker_round_trip() -> None:
    marker = VaryMarker(("accept", "accept-encoding"))
    assert VaryMarker.from_bytes(marker.to_bytes()) == marker


# --------------------------------------------------------- the flow, with a dict


class DictBackend:
    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}
        self.reads = 0

    def get(self, key: str) -> bytes | None:
        self.reads += 1
        return self.data.get(key)


def run(
    backend: DictBackend,
    req: Request,
    app: Response,
    now: float,
    policy: HttpCachePolicy = DEFAULT_POLICY,
) -> Response:
    step: Read | Hit | Forward = begin(req, policy)
    while isinstance(step, Read):
        step = step.feed(backend.get(step.key), now)
    if isinstance(step, Hit):
        return step.response
    assert isinstance(step, Forward)
    sent, decision = step.finish(app, now)
    if decision is not None:
        for key, data, _ttl in decision.writes():
            backend.data[key] = data
    return sent


def test_flow_without_vary_reads_once() -> None:
    backend = DictBackend()
    app = ok(("Cache-Control", "max-age=60"), ("Cache-Tag", "t"))
    miss = run(backend, get(), app, NOW)
    assert header(miss, "Cache-Status") == "cachekit; fwd=uri-miss; stored"
    assert header(miss, "Cache-Tag") is None
    backend.reads = 0
    hit = run(backend, get(), ok(body=b"not called"), NOW + 5)
    assert hit.body == b"hello" and backend.reads == 1
    assert header(hit, "Cache-Status") == "cachekit; hit; ttl=55"
    assert header(hit, "Age") == "5"
    stale = run(backend, get(), app, NOW + 61)
    assert header(stale, "Cache-Status") == "cachekit; fwd=stale; stored"


def test_flow_with_vary_reads_twice_and_keeps_variants_apart() -> None:
    backend = DictBackend()

    def app(lang: str) -> Response:
        return ok(("Vary", "Accept-Language"), body=lang.encode())

    fr, de = get(headers={"Accept-Language": "fr"}), get(headers={"Accept-Language": "de"})
    assert header(run(backend, fr, app("fr"), NOW), "Cache-Status") == (
        "cachekit; fwd=uri-miss; stored"
    )
    vary_miss = run(backend, de, app("de"), NOW)
    assert vary_miss.body == b"de"
    assert header(vary_miss, "Cache-Status") == "cachekit; fwd=vary-miss; stored"
    backend.reads = 0
    assert run(backend, fr, app("wrong"), NOW + 1).body == b"fr"
    assert run(backend, de, app("wrong"), NOW + 1).body == b"de"
    assert backend.reads == 4
    # a Vary on a header the request lacks is its own variant
    none = run(backend, get(), app("none"), NOW + 1)
    assert none.body == b"none" and run(backend, get(), app("wrong"), NOW + 2).body == b"none"


def test_flow_uncacheable_requests() -> None:
    backend = DictBackend()
    post = run(backend, get(method="POST"), ok(), NOW)
    assert header(post, "Cache-Status") == "cachekit; fwd=method"
    reload = run(backend, get(headers={"Cache-Control": "no-cache"}), ok(), NOW)
    assert header(reload, "Cache-Status") == "cachekit; fwd=request; stored"
    assert backend.reads == 0
    no_store = run(backend, get("/x", headers={"Cache-Control": "no-store"}), ok(), NOW)
    assert header(no_store, "Cache-Status") == "cachekit; fwd=uri-miss"
    assert primary_key(get("/x")) not in backend.data


def test_flow_head_is_served_from_the_get_entry_but_never_stored() -> None:
    backend = DictBackend()
    head_miss = run(backend, get(method="HEAD"), ok(body=b""), NOW)
    assert header(head_miss, "Cache-Status") == "cachekit; fwd=uri-miss" and not backend.data
    run(backend, get(), ok(), NOW)
    head_hit = run(backend, get(method="HEAD"), ok(), NOW)
    assert head_hit.body == b"" and header(head_hit, "Content-Length") == "5"


def test_corrupt_entry_is_a_miss() -> None:
    backend = DictBackend()
    backend.data[primary_key(get())] = b"CKH1garbage"
    assert header(run(backend, get(), ok(), NOW), "Cache-Status") == (
        "cachekit; fwd=uri-miss; stored"
    )


@pytest.mark.parametrize("value", ["\udcff", "é" * 10_000, "\x00\r\n", ",,,", '"', "W/"])
def test_hostile_header_values_never_raise(value: str) -> None:
    names = [
        "Cache-Control",
        "If-None-Match",
        "If-Modified-Since",
        "Vary",
        "Authorization",
        "Accept",
        "Host",
        "Expires",
        "Date",
        "Age",
        "Content-Length",
        "Cache-Tag",
    ]
    req = Request(
        "GET", "ht tp", value, "/" + value, value + "=" + value, [(name, value) for name in names]
    )
    backend = DictBackend()
    resp = ok(
        *[(name, value) for name in names if name != "Authorization"], ("Cache-Control", "public")
    )
    run(backend, req, resp, NOW)
    run(backend, req, resp, NOW + 1)
    store_precheck(req, 200, resp.headers)
