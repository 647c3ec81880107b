from __future__ import annotations

import inspect
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from cachekit import Cache, ConfigurationError

from conftest import unique_prefix

ROOT = Path(__file__).resolve().parent.parent


def test_url_options() -> None:
    cache = Cache("memory://?max_entries=5&prefix=p&default_ttl=30&version=2")
    assert (cache.prefix, cache.version, cache.default_ttl) == ("p", "2", 30.0)
    assert cache.stats()["max_entries"] == 5
    redis_cache = Cache("redis://127.0.0.1:1/0?prefix=r&socket_timeout=2")
    assert redis_cache.prefix == "r"
    client = redis_cache._backend.clients.get()
    assert client.connection_pool.connection_kwargs["socket_timeout"] == 2.0


@pytest.mark.parametrize(
    "kwargs",
    [
        {"url": "mongodb://x"},
        {"url": "memory://?max_entries=lots"},
        {"on_error": "explode"},
        {"prefix": ""},
        {"default_ttl": "1h"},
        {"compress": "lz4"},
        {"max_entries": 0},
        {"url": "memory://?max_entries=-5"},
    ],
)
def test_bad_configuration(kwargs: dict[str, object]) -> None:
    url = kwargs.pop("url", None)
    with pytest.raises(ConfigurationError):
        Cache(url, **kwargs)  # type: ignore[arg-type]


def test_from_env() -> None:
    env = {
        "CACHEKIT_URL": "fakeredis://env",
        "CACHEKIT_PREFIX": "svc",
        "CACHEKIT_DEFAULT_TTL": "12.5",
        "CACHEKIT_SERIALIZER": "json",
        "CACHEKIT_ON_ERROR": "raise",
    }
    cache = Cache.from_env(env)
    assert (cache.prefix, cache.default_ttl) == ("svc", 12.5)
    assert cache._raise_errors and cache.serializer.__class__.__name__ == "JsonSerializer"
    assert Cache.from_env({}).stats()["backend"] == "memory"
    with pytest.raises(ConfigurationError, match="CACHEKIT_DEFAULT_TTL"):
        Cache.from_env({"CACHEKIT_DEFAULT_TTL": "soon"})


def test_client_with_decoded_responses_is_refused() -> None:
    import redis

    with pytest.raises(ConfigurationError, match="decode_responses"):
        Cache(client=redis.Redis(decode_responses=True))


def test_generated_sync_code_is_current() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "unasync.py"), "--check"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout


def test_with_options_shares_the_backend(redis_url: str) -> None:
    cache = Cache(redis_url, prefix="wo", default_ttl=30)
    raw = cache.with_options(serializer="raw")
    assert (raw.prefix, raw.default_ttl) == ("wo", 30)
    raw.set("bytes", b"\x00\xff")
    cache.set("json", {"a": 1})
    assert raw.get("bytes") == b"\x00\xff" and cache.get("json") == {"a": 1}
    assert cache.exists("bytes")  # same namespace, same store
    assert cache.clear() == 2
    with pytest.raises(ConfigurationError, match="max_entries"):
        cache.with_options(max_entries=3)
    cache.close()


# -- the option table: every way of configuring reads it ----------------------------------------
# A valid value per option: (as a Python value, as text, what the cache keeps). A new option
# in the table must get a row here, so each test below covers it.
SAMPLES: dict[str, tuple[object, str, object]] = {
    "prefix": ("shop", "shop", "shop"),
    "version": ("7", "7", "7"),
    "default_ttl": (30.0, "30", 30.0),
    "serializer": ("json", "json", "json"),
    "secret": ("s3cret", "s3cret", "s3cret"),
    "compress": ("zlib", "zlib", "zlib"),
    "compress_threshold": (10, "10", 10),
    "max_decompressed_size": (1 << 20, "1048576", 1 << 20),
    "timeout": (1.5, "1.5", 1.5),
    "connect_timeout": (2.0, "2", 2.0),
    "on_error": ("raise", "raise", "raise"),
    "retry_interval": (0.5, "0.5", 0.5),
    "generation_poll": (0.5, "0.5", 0.5),
    "max_entries": (5, "5", 5),
    "eviction": ("tinylfu", "tinylfu", "tinylfu"),
    "ignore_cookies": (["_ga*", "consent"], "_ga*, consent", ("_ga*", "consent")),
    "vary_cookies": (("lang",), "lang", ("lang",)),
    "near": (False, "false", None),  # on needs Redis: tests/near
    "metrics": ("prometheus", "prometheus", "prometheus"),  # tests/ops/test_metrics.py
    "owner": ("app", "app", "app"),
}
# one bad value per source kind, and the option it names
BAD = [("timeout", -1, "-1"), ("default_ttl", float("nan"), "nan"), ("max_entries", 0, "0")]


def test_every_option_has_a_sample_and_the_constructor_takes_exactly_the_table() -> None:
    from cachekit._cache import _NOT_OPTIONS
    from cachekit._config import OPTIONS

    assert set(SAMPLES) == set(OPTIONS)
    parameters = set(inspect.signature(Cache.__init__).parameters) - {"self"}
    assert parameters == set(OPTIONS) | set(_NOT_OPTIONS)


@pytest.mark.parametrize("name", list(SAMPLES))
def test_each_option_is_accepted_by_every_way_that_takes_it(name: str) -> None:
    from flask import Flask

    from cachekit._config import OPTIONS
    from cachekit.integrations.flask import FlaskCache

    value, text, kept = SAMPLES[name]
    option = OPTIONS[name]
    assert Cache(**{name: value}).options[name] == kept  # type: ignore[arg-type]
    url = f"memory://?{name}={text}"
    if option.in_url:
        assert Cache(url).options[name] == kept
    else:
        with pytest.raises(ConfigurationError, match=name):
            Cache(url)
    env = {f"CACHEKIT_{name.upper()}": text}
    if option.in_settings:
        assert Cache.from_env(env).options[name] == kept
        app = Flask(__name__)
        app.config[f"CACHEKIT_{name.upper()}"] = value
        FlaskCache(app)
        with app.app_context():
            assert FlaskCache().cache is not None
            assert app.extensions["cachekit"].cache.options[name] == kept
        app = Flask(__name__)
        app.config[f"CACHEKIT_{name.upper()}"] = text  # text, as from_prefixed_env may give
        FlaskCache(app)
        assert app.extensions["cachekit"].cache.options[name] == kept
    else:
        with pytest.raises(ConfigurationError, match=f"CACHEKIT_{name.upper()}"):
            Cache.from_env(env)
    if option.in_settings and name not in ("version", "default_ttl"):
        # Django: version and default_ttl are its own VERSION and TIMEOUT
        assert _django_cache({name: value}).cachekit.options[name] == kept
        assert _django_cache({name: text}).cachekit.options[name] == kept
    derived = Cache(serializer="json", secret="x")
    if option.derivable:
        assert derived.with_options(**{name: value}).options[name] == kept
    else:
        with pytest.raises(ConfigurationError, match=name):
            derived.with_options(**{name: value})


def _django_cache(options: dict[str, object], **params: object) -> Any:
    import django_settings

    django_settings.configure("test_django")
    from cachekit.integrations.django import CachekitCache

    return CachekitCache("memory://", {"OPTIONS": options, **params})


def test_unknown_options_are_errors_that_name_them_and_the_accepted_ones() -> None:
    with pytest.raises(ConfigurationError, match=r"'maxentries'.*did you mean 'max_entries'"):
        Cache("memory://?maxentries=5")  # was ignored
    with pytest.raises(ConfigurationError, match=r"'prefx'.*did you mean 'prefix'.*version"):
        Cache("redis://127.0.0.1:1/0?prefx=shop")  # was handed to redis-py: cache silently off
    with pytest.raises(ConfigurationError, match="'prefx'"):
        Cache("fakeredis://?prefx=shop")
    with pytest.raises(TypeError, match="prefx"):
        Cache(prefx="shop")  # type: ignore[call-arg]
    with pytest.raises(ConfigurationError, match=r"CACHEKIT_PREFX.*did you mean 'CACHEKIT_PREFIX'"):
        Cache.from_env({"CACHEKIT_PREFX": "shop"})
    with pytest.raises(ConfigurationError, match=r"'prefx'.*did you mean 'prefix'"):
        Cache().with_options(prefx="shop")
    # names of cachekit's that are not options stay usable in the environment
    assert Cache.from_env({"CACHEKIT_REDIS_SERVER": "/usr/bin/redis-server"}).prefix == "cachekit"


def test_flask_config_rejects_unknown_and_bad_settings() -> None:
    from flask import Flask

    from cachekit.integrations.flask import FlaskCache

    app = Flask(__name__)
    app.config["CACHEKIT_PREFX"] = "shop"
    with pytest.raises(ConfigurationError, match=r"CACHEKIT_PREFX.*CACHEKIT_PREFIX"):
        FlaskCache(app)
    app = Flask(__name__)
    app.config["CACHEKIT_OPTIONS"] = {"timout": 1}
    with pytest.raises(ConfigurationError, match=r"'timout'.*did you mean 'timeout'"):
        FlaskCache(app)
    with pytest.raises(ConfigurationError, match=r"'prefx'.*FlaskCache"):
        FlaskCache(prefx="shop")
    app = Flask(__name__)
    app.config["CACHEKIT_TIMEOUT"] = -1
    with pytest.raises(ConfigurationError, match="CACHEKIT_TIMEOUT"):
        FlaskCache(app)


def test_django_options_reject_unknown_and_bad_values() -> None:
    from django.core.exceptions import ImproperlyConfigured

    with pytest.raises(ConfigurationError, match=r"'timout'.*did you mean 'timeout'"):
        _django_cache({"timout": 1})
    with pytest.raises(ImproperlyConfigured, match="timeout"):
        _django_cache({"timeout": -1})
    with pytest.raises(ConfigurationError, match="TIMEOUT"):
        _django_cache({"default_ttl": 5})
    with pytest.raises(ConfigurationError, match="max_entries"):
        _django_cache({"MAX_ENTRIES": "lots"})
    assert _django_cache({"MAX_ENTRIES": "3"}).cachekit.options["max_entries"] == 3


@pytest.mark.parametrize(("name", "value", "text"), BAD)
def test_bad_values_are_errors_naming_the_option_in_every_way(
    name: str, value: object, text: str
) -> None:
    with pytest.raises(ConfigurationError, match=name):
        Cache(**{name: value})  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match=f"{name}.*the cache URL"):
        Cache(f"memory://?{name}={text}")
    with pytest.raises(ConfigurationError, match=f"CACHEKIT_{name.upper()}.*environment"):
        Cache.from_env({f"CACHEKIT_{name.upper()}": text})
    if name != "default_ttl":
        with pytest.raises(ConfigurationError, match=name):
            _django_cache({name: value})


def test_precedence_arguments_then_url_query_then_settings() -> None:
    from flask import Flask

    from cachekit.integrations.flask import FlaskCache

    env = {"CACHEKIT_URL": "memory://?prefix=url", "CACHEKIT_PREFIX": "env"}
    env["CACHEKIT_VERSION"] = "3"
    assert Cache.from_env(env).prefix == "url"
    assert Cache.from_env(env).version == "3"
    assert Cache.from_env(env, prefix="arg").prefix == "arg"
    assert Cache("memory://?prefix=url", prefix="arg").prefix == "arg"
    app = Flask(__name__)
    app.config.update(CACHEKIT_URL="memory://?default_ttl=7", CACHEKIT_PREFIX="cfg")
    FlaskCache(app, default_ttl=9)
    cache = app.extensions["cachekit"].cache
    assert (cache.prefix, cache.default_ttl) == ("cfg", 7.0)
    app = Flask(__name__)
    FlaskCache(app, default_ttl=9)  # FlaskCache keywords: defaults of the app.config keys
    assert app.extensions["cachekit"].cache.default_ttl == 9.0


def test_redis_py_url_arguments_pass_and_others_are_refused() -> None:
    import redis.connection

    from cachekit._config import redis_url_arguments

    cache = Cache("redis://127.0.0.1:1/0?socket_timeout=2&health_check_interval=3&client_name=ck")
    kwargs = cache._backend.clients.get().connection_pool.connection_kwargs
    assert (kwargs["socket_timeout"], kwargs["health_check_interval"]) == (2.0, 3)
    assert kwargs["client_name"] == "ck"
    tls = Cache("rediss://127.0.0.1:1/0?ssl_cert_reqs=none&ssl_check_hostname=false")
    kwargs = tls._backend.clients.get().connection_pool.connection_kwargs
    assert (kwargs["ssl_cert_reqs"], kwargs["ssl_check_hostname"]) == ("none", False)
    # taken from redis-py's own parser: each name it parses that a plain TCP connection
    # takes passes through
    parsed = set(redis.connection.URL_QUERY_ARGUMENT_PARSERS)
    assert {"socket_timeout", "socket_keepalive", "health_check_interval", "db"} <= (
        redis_url_arguments("redis") & parsed
    )
    with pytest.raises(ConfigurationError, match="ssl_cert_reqs"):
        Cache("redis://127.0.0.1:1/0?ssl_cert_reqs=none")  # TLS options need rediss://
    with pytest.raises(ConfigurationError, match="decode_responses"):
        Cache("redis://127.0.0.1:1/0?decode_responses=true")  # cachekit stores bytes
    with pytest.raises(ConfigurationError, match="secret cannot be given in the cache URL"):
        Cache("redis://127.0.0.1:1/0?secret=x")


def test_a_typo_in_a_redis_url_no_longer_leaves_a_silently_dead_cache(redis_url: str) -> None:
    with pytest.raises(ConfigurationError, match="prefx"):
        Cache(f"{redis_url}?prefx=shop")
    cache = Cache(f"{redis_url}?socket_timeout=2&prefix={unique_prefix()}", on_error="raise")
    assert cache.set("k", 1) and cache.get("k") == 1
    cache.clear()
    cache.close()


def test_prefixes_reserved_for_adapters_and_internal_keys() -> None:
    for prefix in ("!django:shop", "#shop"):
        with pytest.raises(ConfigurationError, match="prefix"):
            Cache(prefix=prefix)
    assert Cache(prefix="shop", owner="django").make_key("k") == "!django:shop:1:k"


@pytest.mark.parametrize("prefix", [" shop", "shop ", "shop\n", "\tshop", "sh\ud800op"])
def test_a_prefix_is_the_same_namespace_or_refused_from_every_source(
    prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """URL and environment values were stripped, arguments not: " shop" from the URL was
    namespace "shop", as an argument " shop". Whitespace around a prefix is refused from
    every source (and a lone surrogate, which no Redis key can hold)."""
    from urllib.parse import quote

    monkeypatch.setenv("CACHEKIT_URL", "memory://")
    makers = {
        "argument": lambda: Cache(prefix=prefix),
        "with_options": lambda: Cache().with_options(prefix=prefix),
        "from_env argument": lambda: Cache.from_env(prefix=prefix),
    }
    if "\ud800" not in prefix:  # URLs and the environment cannot hold a lone surrogate
        makers["url"] = lambda: Cache("memory://?prefix=" + quote(prefix))
        makers["environment"] = lambda: Cache.from_env({"CACHEKIT_PREFIX": prefix})
    for where, make in makers.items():
        with pytest.raises(ConfigurationError, match="(?i)prefix"):
            make()
            pytest.fail(f"{prefix!r} accepted from the {where}")
    assert Cache("memory://?prefix=a%20b").prefix == Cache(prefix="a b").prefix == "a b"


def test_with_options_keeps_every_other_option() -> None:
    cache = Cache(serializer="json", compress="zlib", compress_threshold=10, default_ttl=5)
    derived = cache.with_options(prefix="other")
    assert {k: v for k, v in derived.options.items() if k != "prefix"} == {
        k: v for k, v in cache.options.items() if k != "prefix"
    }


def test_readme_options_table_is_the_table(monkeypatch: pytest.MonkeyPatch) -> None:
    import dataclasses

    from cachekit._config import OPTIONS, options_table_markdown

    # conftest gives the tests a patient Redis timeout; the README documents the real one
    monkeypatch.setitem(OPTIONS, "timeout", dataclasses.replace(OPTIONS["timeout"], default=0.25))
    assert options_table_markdown() in (ROOT / "README.md").read_text()
