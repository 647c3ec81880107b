from __future__ import annotations

import inspect
import subprocess
import sys
from pathlib import Path

import pytest

import cachekit
from cachekit import Cache, ConfigurationError

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


def test_exported_members() -> None:
    for name in cachekit.__all__:
        assert hasattr(cachekit, name), name
        member = getattr(cachekit, name)
        if hasattr(member, "__module__"):
            assert member.__module__.startswith("cachekit"), name
    public = {
        name
        for name in dir(cachekit)
        if not name.startswith("_") and not inspect.ismodule(getattr(cachekit, name))
    }
    assert public - set(cachekit.__all__) <= {"annotations"}


def test_import_needs_no_extras() -> None:
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in {'flask','django','starlette','fastapi','msgpack',"
        "'zstandard','prometheus_client','fakeredis','pytest'}:\n"
        "            raise ImportError('blocked ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "import cachekit\n"
        "c = cachekit.Cache(compress='auto')\n"
        "c.set('k', 1); assert c.get('k') == 1\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


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
