"""redis+cluster:// and redis+sentinel:// URLs: what they accept, and clear errors."""

from __future__ import annotations

import pytest
import redis.cluster

from cachekit import Cache
from cachekit.exceptions import ConfigurationError
from cachekit.testing.servers import ClusterServers, SentinelServers


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("redis+cluster://", "is not host:port"),
        ("redis+cluster://h:x/", "is not host:port"),
        ("redis+cluster://127.0.0.1:70000/", "is not host:port"),
        ("redis+cluster://127.0.0.1:7000/0", "one database"),
        ("redis+cluster://127.0.0.1:7000/?foo=1", "unknown option 'foo'"),
        ("redis+cluster://127.0.0.1:7000/?socket_timeout=1", "unknown option"),
        ("redis+sentinel://127.0.0.1:26379/", "service"),
        ("redis+sentinel://127.0.0.1:26379/svc/x", "service"),
        ("redis+sentinel://127.0.0.1:26379/svc/0/1", "service"),
    ],
)
def test_bad_urls_fail_at_construction(url: str, reason: str) -> None:
    with pytest.raises(ConfigurationError, match=reason):
        Cache(url)


def test_unreachable_cluster_fails_open() -> None:
    cache = Cache("redis+cluster://127.0.0.1:1,127.0.0.1:2/", timeout=0.2)
    assert cache.get("k", "default") == "default"
    assert cache.set("k", 1) is False
    assert cache.stats()["outages"] >= 1  # counted as unavailable, not as a bug
    cache.close()


def test_options_in_the_url_and_every_node_listed(redis_cluster: ClusterServers) -> None:
    url = redis_cluster.url + "?prefix=shop&default_ttl=40"
    cache = Cache(url)
    assert cache.prefix == "shop"
    cache.set("k", 1)
    left = cache.ttl("k")
    assert left is not None and 38 < left <= 40
    # one reachable startup node is enough: the others are discovered
    one = Cache(f"redis+cluster://127.0.0.1:1,127.0.0.1:{redis_cluster.ports[2]}/?prefix=shop")
    assert one.get("k") == 1
    cache.clear()
    cache.close()
    one.close()


def test_decoding_cluster_client_is_refused(redis_cluster: ClusterServers) -> None:
    client = redis.cluster.RedisCluster(
        host="127.0.0.1", port=redis_cluster.ports[0], decode_responses=True
    )
    with pytest.raises(ConfigurationError, match="decode_responses"):
        Cache(client=client)
    client.close()


def test_sentinel_url_with_db_and_two_sentinels(redis_sentinel: SentinelServers) -> None:
    port = redis_sentinel.sentinels[0].port
    # an unreachable sentinel listed first: the next one answers
    url = f"redis+sentinel://127.0.0.1:1,127.0.0.1:{port}/{redis_sentinel.service}/3?prefix=s"
    cache = Cache(url)
    db0 = Cache(redis_sentinel.url, prefix="s")
    cache.set("k", "in db 3")
    assert cache.get("k") == "in db 3"
    assert db0.get("k") is None  # another database of the same primary
    primary = redis.Redis(port=redis_sentinel.primary_port(), db=3)
    assert primary.exists("s:1:k") == 1
    primary.close()
    cache.clear()
    cache.close()
    db0.close()
