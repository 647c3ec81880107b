"""Fixtures of the topology feature tests (``test_cluster_features.py`` and its async
twin import them): each topology (``topology``, tests/conftest.py) as a URL, and a cache
on it that raises instead of failing open and logs no warning. Not a conftest.py: the
tests import ``conftest`` by name, and a second one would shadow tests/conftest.py."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator

import pytest

from cachekit import Cache
from cachekit.testing.servers import ClusterServers, SentinelServers


@pytest.fixture
def url(topology: ClusterServers | SentinelServers) -> str:
    return topology.url


@pytest.fixture
def cache(url: str, caplog: pytest.LogCaptureFixture) -> Iterator[Cache]:
    cache = Cache(url, prefix=f"f{uuid.uuid4().hex[:10]}", on_error="raise")
    with caplog.at_level(logging.WARNING, logger="cachekit"):
        yield cache
    cache.clear()
    cache.close()
    problems = [r.getMessage() for r in caplog.records if r.name.startswith("cachekit")]
    assert problems == []
