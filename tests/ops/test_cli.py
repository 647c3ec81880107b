"""The ``cachekit`` command line end to end: ``python -m cachekit`` in a subprocess against
a real redis-server (the session's, or a private one to freeze), output parsed from
``--json``, exit codes checked, and every key outside the namespace checked untouched."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
import redis

from cachekit import Cache
from cachekit.testing.servers import RedisServer

ROOT = Path(__file__).resolve().parents[2]


def _prefix() -> str:
    import uuid

    return f"cli{uuid.uuid4().hex[:10]}"


def run(
    *args: str, url: str | None = None, env: dict[str, str] | None = None, cwd: Path = ROOT,
    timeout: float = 60,
) -> subprocess.CompletedProcess[str]:  # fmt: skip
    environ = {k: v for k, v in os.environ.items() if not k.startswith("CACHEKIT_")}
    environ["CACHEKIT_JOURNAL_DIR"] = os.environ.get("CACHEKIT_JOURNAL_DIR", "")
    # this checkout's sources first, wherever the command runs (not the editable
    # install's link tree, which lags behind modules added since the last install)
    environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), environ.get("PYTHONPATH")]))
    environ.update(env or {})
    command = [sys.executable, "-m", "cachekit", *(["--url", url] if url else []), *args]
    return subprocess.run(
        command, capture_output=True, text=True, timeout=timeout, env=environ, cwd=cwd
    )


def run_json(*args: str, url: str, code: int = 0, **kw: Any) -> Any:
    done = run("--json", *args, url=url, **kw)
    assert done.returncode == code, (done.returncode, done.stdout, done.stderr)
    return json.loads(done.stdout)


@pytest.fixture
def world(redis_url: str) -> Any:
    """A namespace of ours (entries, tags, a counter), and keys that are not ours: another
    prefix, other versions, look-alike prefixes, plain non-cachekit keys."""
    prefix = _prefix()
    cache = Cache(redis_url, prefix=prefix, default_ttl=300)
    cache.set("user:1", {"name": "Ada", "ids": {1, 2}}, tags=["users"])
    cache.set("user:2", [1, 2, 3], tags=["users"])
    cache.set("order:7", "shipped", tags=["orders"])
    cache.set("plain", b"\x00bytes")
    cache.incr("visits")
    others = [
        Cache(redis_url, prefix=prefix + "x"),  # look-alike prefix
        Cache(redis_url, prefix=prefix, version=2),  # same prefix, another version
        Cache(redis_url, prefix=prefix, version=10),  # "p:10:" is not inside "p:1:"
        Cache(redis_url, prefix=f"{prefix}:1"),  # escaped: "p%3A1:1:"
    ]
    for other in others:
        other.set("user:1", "someone else's", tags=["users"])
    client = redis.Redis.from_url(redis_url)
    foreign = {f"{prefix}-legacy:user:1": b"x", f"{prefix}users": b"y", f"x:{prefix}:1:u": b"z"}
    client.mset(foreign)
    outside_before = _outside(client, cache, prefix)
    yield {"cache": cache, "others": others, "client": client, "prefix": prefix,
           "outside": outside_before, "url": redis_url}  # fmt: skip
    for c in [cache, *others]:
        c.clear()
        c.close()
    client.delete(*foreign)
    client.close()


def _outside(client: Any, cache: Cache, prefix: str) -> dict[bytes, Any]:
    """Every key the fixture made outside the namespace (they all spell the prefix; keys
    other tests left on the shared server, which may expire meanwhile, are not compared),
    with its value. Our own namespace's internal keys ("#prefix:1:...": tag sets, the
    marks a delete adds) are ours, and left out too."""
    ns = cache.namespace.text.encode()
    return {
        k: client.dump(k) for k in client.scan_iter(count=1000)
        if prefix.encode() in k and not k.startswith(ns) and not k.startswith(b"#" + ns)
    }  # fmt: skip


def _outside_untouched(world: Any) -> None:
    # nothing outside the namespace was deleted or changed
    assert _outside(world["client"], world["cache"], world["prefix"]) == world["outside"]
    assert len(world["outside"]) >= 10  # other namespaces' entries and tag sets, foreign keys


def test_keys_lists_exactly_the_namespace(world: Any) -> None:
    data = run_json("--prefix", world["prefix"], "keys", url=world["url"])
    assert sorted(data["keys"]) == ["order:7", "plain", "user:1", "user:2", "visits"]
    assert data["truncated"] is False
    data = run_json("--prefix", world["prefix"], "keys", "user:*", url=world["url"])
    assert sorted(data["keys"]) == ["user:1", "user:2"]
    data = run_json("--prefix", world["prefix"], "keys", "--limit", "2", url=world["url"])
    assert len(data["keys"]) == 2 and data["truncated"] is True


def test_stats_counts_keys_and_memory_per_namespace(world: Any) -> None:
    data = run_json("--prefix", world["prefix"], "stats", "--top", "100000", "--scan-limit",
                    "100000000", url=world["url"])  # fmt: skip  (exact counts on a shared server)
    mine = [n for n in data["namespaces"] if n["this_cache"]]
    assert len(mine) == 1 and mine[0]["namespace"] == world["cache"].namespace.text
    assert mine[0]["keys"] == 5
    assert mine[0]["internal_keys"] >= 2  # the tag sets of "users" and "orders"
    assert mine[0]["memory_bytes"] > 0
    names = {n["namespace"]: n["keys"] for n in data["namespaces"]}
    assert names[f"{world['prefix']}:2:"] == 1 and names[f"{world['prefix']}:10:"] == 1
    assert data["scan"]["complete"] is True
    server = data["server"]
    assert server["keys"] >= 10 and server["redis_version"]


def test_stats_past_the_scan_limit_says_it_estimates(world: Any) -> None:
    data = run_json("--prefix", world["prefix"], "stats", "--scan-limit", "1", "--count", "1",
                    url=world["url"])  # fmt: skip
    assert data["scan"]["estimated"] is True and data["scan"]["examined"] >= 1


def test_inspect_shows_the_decoded_value_ttl_tags_and_serializer(world: Any) -> None:
    data = run_json("--prefix", world["prefix"], "inspect", "user:1", url=world["url"])
    assert data["decoded"] is True
    assert data["value"] == {"name": "Ada", "ids": [1, 2]}  # a set, as JSON
    assert data["tags"] == ["users"]
    assert data["serializer"] == "orjson"
    assert 0 < data["ttl"] <= 300
    assert data["full_key"] == world["cache"].make_key("user:1")
    assert data["size_bytes"] > 0 and data["memory_bytes"] > 0
    human = run("--prefix", world["prefix"], "inspect", "user:1", url=world["url"])
    assert human.returncode == 0 and "'Ada'" in human.stdout and "users" in human.stdout
    counter = run_json("--prefix", world["prefix"], "inspect", "visits", url=world["url"])
    assert counter["value"] == 1 and "counter" in counter["format"]


def test_inspect_missing_key_and_foreign_value_exit_1(world: Any) -> None:
    missing = run("--prefix", world["prefix"], "inspect", "nope", url=world["url"])
    assert missing.returncode == 1 and "no such key" in missing.stderr
    world["client"].set(world["cache"].make_key("junk"), b"\xffnot an entry")
    junk = run_json("--prefix", world["prefix"], "inspect", "junk", url=world["url"], code=1)
    assert junk["decoded"] is False and junk["note"]
    world["client"].rpush(world["cache"].make_key("alist"), b"x")
    listed = run_json("--prefix", world["prefix"], "inspect", "alist", url=world["url"], code=1)
    assert listed["type"] == "list"


def test_inspect_signed_entries_with_the_secret_from_the_environment(redis_url: str) -> None:
    prefix = _prefix()
    with Cache(redis_url, prefix=prefix, secret="s3cret") as cache:
        cache.set("k", {"v": 1})
        ok = run_json("inspect", "k", url=redis_url,
                      env={"CACHEKIT_PREFIX": prefix, "CACHEKIT_SECRET": "s3cret"})  # fmt: skip
        assert ok["value"] == {"v": 1} and "signed" in ok["format"]
        wrong = run_json("inspect", "k", url=redis_url, code=1,
                         env={"CACHEKIT_PREFIX": prefix, "CACHEKIT_SECRET": "other"})  # fmt: skip
        assert wrong["decoded"] is False and "signature" in wrong["note"]
        cache.clear()


def test_ttl(world: Any) -> None:
    world["cache"].set("forever", 1, ttl=None)
    data = run_json("--prefix", world["prefix"], "ttl", "user:1", url=world["url"])
    assert data["exists"] and 0 < data["ttl"] <= 300
    data = run_json("--prefix", world["prefix"], "ttl", "forever", url=world["url"])
    assert data == {"key": "forever", "exists": True, "ttl": None}
    data = run_json("--prefix", world["prefix"], "ttl", "nope", url=world["url"], code=1)
    assert data["exists"] is False


def test_purge_pattern_dry_run_deletes_nothing(world: Any) -> None:
    data = run_json("--prefix", world["prefix"], "purge", "--pattern", "*", "--dry-run",
                    url=world["url"])  # fmt: skip
    assert data["matched"] == 5 and data["deleted"] == 0 and data["dry_run"] is True
    assert world["cache"].get("user:1") == {"name": "Ada", "ids": {1, 2}}
    assert len(run_json("--prefix", world["prefix"], "keys", url=world["url"])["keys"]) == 5


def test_purge_pattern_leaves_every_other_namespace_untouched(world: Any) -> None:
    data = run_json("--prefix", world["prefix"], "--count", "2", "purge", "--pattern", "user:*",
                    url=world["url"])  # fmt: skip
    assert data["deleted"] == 2
    assert world["cache"].get("user:1") is None and world["cache"].get("order:7") == "shipped"
    data = run_json("--prefix", world["prefix"], "purge", "--pattern", "*", url=world["url"])
    assert data["deleted"] == 3
    assert run_json("--prefix", world["prefix"], "keys", url=world["url"])["keys"] == []
    for other in world["others"]:
        assert other.get("user:1") == "someone else's"
    _outside_untouched(world)


def test_purge_pattern_is_a_glob_inside_the_namespace_only(world: Any) -> None:
    # "*" in another spelling must not climb out of the namespace
    data = run_json("--prefix", world["prefix"], "purge", "--pattern", "../*", url=world["url"])
    assert data["deleted"] == 0
    _outside_untouched(world)


def test_purge_tag(world: Any) -> None:
    dry = run_json("--prefix", world["prefix"], "purge", "--tag", "users", "--dry-run",
                   url=world["url"])  # fmt: skip
    assert dry["matched"] == 2 and dry["deleted"] == 0
    assert sorted(dry["sample"]) == ["user:1", "user:2"]
    assert world["cache"].get("user:2") == [1, 2, 3]
    done = run_json("--prefix", world["prefix"], "purge", "--tag", "users", url=world["url"])
    assert done["deleted"] == 2
    assert world["cache"].get("user:1") is None and world["cache"].get("order:7") == "shipped"
    for other in world["others"]:  # the same tag name in other namespaces: theirs
        assert other.get("user:1") == "someone else's"
    _outside_untouched(world)


def test_usage_errors_exit_2(redis_url: str) -> None:
    assert run("stats").returncode == 2  # no URL at all
    assert run("bogus", url=redis_url).returncode == 2
    assert run("purge", url=redis_url).returncode == 2  # neither --tag nor --pattern
    assert run("purge", "--tag", "a", "--pattern", "b", url=redis_url).returncode == 2
    typo = run("stats", url=redis_url + "?prefx=a")
    assert typo.returncode == 2 and "did you mean 'prefix'" in typo.stderr
    memory = run("stats", url="memory://")
    assert memory.returncode == 2 and "Redis" in memory.stderr
    assert run("warm", "no_colon", url=redis_url).returncode == 2
    assert run("warm", "no_such_module_xyz:f", url=redis_url).returncode == 2
    env_typo = run("stats", url=redis_url, env={"CACHEKIT_PREFX": "a"})
    assert env_typo.returncode == 2 and "CACHEKIT_PREFIX" in env_typo.stderr
    assert run("--help").returncode == 0


def test_cannot_connect_exits_3_quickly() -> None:
    from cachekit.testing.servers import free_port

    started = time.monotonic()
    done = run("--json", "health", url=f"redis://127.0.0.1:{free_port()}/0")
    assert done.returncode == 3, done.stderr
    assert json.loads(done.stdout)["exit"] == 3 and "cannot connect" in done.stderr
    assert time.monotonic() - started < 15


def test_frozen_redis_exits_3_within_the_timeout(private_redis: RedisServer) -> None:
    private_redis.freeze()
    try:
        started = time.monotonic()
        done = run("--timeout", "0.5", "health", url=private_redis.url)
        assert done.returncode == 3, done.stderr
        assert time.monotonic() - started < 15
    finally:
        private_redis.thaw()


def test_health(world: Any) -> None:
    data = run_json("--prefix", world["prefix"], "health", url=world["url"])
    assert data["ok"] is True


def test_password_is_not_printed(redis_url: str) -> None:
    url = redis_url.replace("redis://", "redis://user:hunter2@")
    done = run("stats", url=url)
    assert "hunter2" not in done.stdout + done.stderr


def test_warm_calls_the_users_function_with_progress(redis_url: str, tmp_path: Path) -> None:
    prefix = _prefix()
    (tmp_path / "warmers.py").write_text(
        textwrap.dedent("""
        from cachekit import Cache

        def fill(count):
            cache = Cache.from_env()  # the command line's --url and --prefix
            for i in range(int(count)):
                cache.set(f"warm:{i}", i)
                yield i

        def with_cache(cache):
            cache.set("given", "yes")
            return 1

        async def fill_async():
            cache = Cache.from_env()
            await cache.aset("async", 1)
            return 1

        def broken():
            raise ValueError("the database is down")
    """)
    )
    args = ("--prefix", prefix)
    data = run_json(*args, "warm", "warmers:fill", "25", url=redis_url, cwd=tmp_path)
    assert data["items"] == 25
    data = run_json(*args, "warm", "warmers:with_cache", url=redis_url, cwd=tmp_path)
    assert data["items"] == 1
    run_json(*args, "warm", "warmers:fill_async", url=redis_url, cwd=tmp_path)
    with Cache(redis_url, prefix=prefix) as cache:
        assert [cache.get(f"warm:{i}") for i in range(25)] == list(range(25))
        assert cache.get("given") == "yes" and cache.get("async") == 1
        cache.clear()
    broken = run(*args, "warm", "warmers:broken", url=redis_url, cwd=tmp_path)
    assert broken.returncode == 1 and "the database is down" in broken.stderr


def test_dead_letters_and_replay(redis_url: str, tmp_path: Path) -> None:
    prefix = _prefix()

    def refuse(items: dict[Any, Any]) -> None:
        raise RuntimeError("database refused")

    with Cache(redis_url, prefix=prefix) as cache:
        queue = cache.write_behind("order:{}", refuse, max_retries=0, journal_dir=False)
        queue.set(7, {"total": 10})
        queue.flush(timeout=10)
        assert len(queue.dead_letters()) == 1
        listing = run_json("--prefix", prefix, "dead-letters", url=redis_url)
        assert listing["queues"] == [{"name": "order:{}", "dead_letters": 1}]
        letters = run_json("--prefix", prefix, "dead-letters", "order:{}", url=redis_url)
        [letter] = letters["dead_letters"]
        assert letter["items"] == [{"id": 7, "value": {"total": 10}}]
        assert "database refused" in letter["error"]

        stored = tmp_path / "stored.json"
        (tmp_path / "app.py").write_text(
            textwrap.dedent(f"""
            import json
            from cachekit import Cache

            cache = Cache.from_env()

            def store_many(items):
                with open({str(stored)!r}, "a") as f:
                    f.write(json.dumps({{str(k): v for k, v in items.items()}}) + "\\n")

            orders = cache.write_behind("order:{{}}", store_many, journal_dir=False)
        """)
        )
        (tmp_path / "still_down.py").write_text(textwrap.dedent("""
            from cachekit import Cache

            def refuse(items):
                raise RuntimeError("still refused")

            def orders():  # a function returning the queue works too
                cache = Cache.from_env()
                return cache.write_behind("order:{}", refuse, max_retries=0, journal_dir=False)
        """))
        by_queue = run_json("--prefix", prefix, "dead-letters", "--queue", "still_down:orders",
                            url=redis_url, cwd=tmp_path)  # fmt: skip
        assert len(by_queue["dead_letters"]) == 1
        again = run_json("--prefix", prefix, "replay", "still_down:orders", url=redis_url,
                         cwd=tmp_path, code=1)  # fmt: skip
        assert again["replayed"] == 1 and again["dead_letters"] == 1  # failed again: kept
        done = run_json("--prefix", prefix, "replay", "app:orders", url=redis_url, cwd=tmp_path)
        assert done["replayed"] == 1 and done["dead_letters"] == 0
        assert json.loads(stored.read_text()) == {"7": {"total": 10}}
        assert queue.dead_letters() == []
        not_a_queue = run("--prefix", prefix, "replay", "app:cache", url=redis_url, cwd=tmp_path)
        assert not_a_queue.returncode == 2
        cache.clear()


def test_ratelimit_show_and_reset(redis_url: str) -> None:
    prefix = _prefix()
    with Cache(redis_url, prefix=prefix) as cache:
        limiter = cache.rate_limiter("api", "10/minute")
        for _ in range(3):
            assert limiter.hit("user:42").allowed
        args = ("--prefix", prefix, "ratelimit")
        shown = run_json(*args, "show", "api", "user:42", "--rate", "10/minute", url=redis_url)
        assert shown["limit"] == 10 and shown["remaining"] == 7 and shown["allowed"]
        reset = run_json(*args, "reset", "api", "user:42", "--rate", "10/minute", url=redis_url)
        assert reset["had_usage"] is True
        assert limiter.peek("user:42").remaining == 10


def test_cluster_keys_and_purge_scan_every_primary(redis_cluster: Any) -> None:
    prefix = _prefix()
    url = redis_cluster.url
    with Cache(url, prefix=prefix) as cache, Cache(url, prefix=prefix + "x") as other:
        cache.set_many({f"item:{i}": i for i in range(60)})  # slots on every primary
        cache.set("user:1", "Ada", tags=["users"])
        other.set_many({f"item:{i}": i for i in range(10)})
        listed = run_json("--prefix", prefix, "keys", "item:*", url=url)
        assert sorted(listed["keys"]) == sorted(f"item:{i}" for i in range(60))
        stats = run_json("--prefix", prefix, "stats", "--scan-limit", "100000000", url=url)
        assert [n["keys"] for n in stats["namespaces"] if n["this_cache"]] == [61]
        done = run_json("--prefix", prefix, "purge", "--pattern", "item:*", url=url)
        assert done["deleted"] == 60
        tagged = run_json("--prefix", prefix, "purge", "--tag", "users", url=url)
        assert tagged["deleted"] == 1
        assert cache.get_many([f"item:{i}" for i in range(60)]) == {}
        assert other.get_many([f"item:{i}" for i in range(10)]) == {
            f"item:{i}": i for i in range(10)
        }
        other.clear()


def test_the_demo_shows_stats_and_the_command_line() -> None:
    from cachekit.cli import COMMANDS

    done = subprocess.run([sys.executable, "-m", "cachekit.demo"], capture_output=True,
                          text=True, timeout=60, cwd=ROOT)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "cache.stats()" in done.stdout and "hit_rate" in done.stdout
    for command in COMMANDS:
        assert f"  {command} " in done.stdout
    help_text = run("--help").stdout
    assert all(command in help_text for command in COMMANDS)


def test_glob_characters_in_the_prefix_match_only_themselves(redis_url: str) -> None:
    base = _prefix()
    with Cache(redis_url, prefix=f"{base}*") as star, Cache(redis_url, prefix=f"{base}x") as x, \
            Cache(redis_url, prefix=f"{base}[x]") as brackets:  # fmt: skip
        for cache in (star, x, brackets):
            cache.set("k", cache.prefix)
        done = run_json("--prefix", f"{base}*", "purge", "--pattern", "*", url=redis_url)
        assert done["deleted"] == 1
        assert x.get("k") == f"{base}x" and brackets.get("k") == f"{base}[x]"
        done = run_json("--prefix", f"{base}[x]", "purge", "--pattern", "*", url=redis_url)
        assert done["deleted"] == 1 and x.get("k") == f"{base}x"
        x.clear()


def test_purge_deletes_a_namespaced_key_the_cache_would_spell_otherwise(world: Any) -> None:
    # a key under the namespace that no user key normalises to (it holds the "…#" mark):
    # deleted by UNLINK, not left behind, not mistaken for another key
    odd = world["cache"].namespace.text + "a…#zz"
    world["client"].set(odd, b"x")
    done = run_json("--prefix", world["prefix"], "purge", "--pattern", "a*", url=world["url"])
    assert done["deleted"] == 1 and not world["client"].exists(odd)
    _outside_untouched(world)


def test_long_purge_shows_progress_and_pauses_between_scans(redis_url: str) -> None:
    prefix = _prefix()
    with Cache(redis_url, prefix=prefix) as cache:
        cache.set_many({f"k:{i}": i for i in range(60)})
        started = time.monotonic()
        done = run("--prefix", prefix, "--count", "1", "--pause", "0.03", "--progress",
                   "--json", "purge", "--pattern", "k:*", url=redis_url)  # fmt: skip
        elapsed = time.monotonic() - started
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["deleted"] == 60
        assert "purge:" in done.stderr and "deleted" in done.stderr  # the progress line
        assert elapsed > 1.0  # the pause between SCAN calls was kept (COUNT 1: many calls)


def test_purge_reaches_an_apps_near_cache(redis_url: str) -> None:
    prefix = _prefix()
    with Cache(redis_url, prefix=prefix, near=True) as app:
        app.set("k", "v")
        assert app.get("k") == "v"  # in the app's L1 now
        done = run_json("--prefix", prefix, "purge", "--pattern", "*", url=redis_url,
                        env={"CACHEKIT_NEAR": "1"})  # fmt: skip
        assert done["deleted"] == 1
        deadline = time.monotonic() + 5  # max_stale bounds it; the link usually is at once
        while app.get("k") is not None and time.monotonic() < deadline:
            time.sleep(0.01)  # polling another process's effect: no event to wait on here
        assert app.get("k") is None


def test_inspect_shows_how_long_a_stale_ttl_entry_stays_fresh(redis_url: str) -> None:
    prefix = _prefix()
    with Cache(redis_url, prefix=prefix) as cache:

        @cache.cached(ttl=60, stale_ttl=30)
        def price(item: int) -> float:
            return 9.5

        assert price(1) == 9.5
        data = run_json("--prefix", prefix, "inspect", price.key(1), url=redis_url)
        assert data["value"] == 9.5
        assert 50 < data["fresh_for"] <= 60 < data["ttl"] <= 90  # served stale after 60 s
        human = run("--prefix", prefix, "inspect", price.key(1), url=redis_url)
        assert "then stale until the ttl" in human.stdout
        cache.clear()
