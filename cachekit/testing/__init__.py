"""Test support for cachekit and for third-party backends; never imported by ``cachekit``.

The backend conformance suite is public, so a third-party backend's test file is short.
Subclass :class:`CacheContract` and provide one fixture, ``make_cache``: a callable
``make_cache(prefix) -> Cache`` whose caches share one store (so that namespaces can be
checked against each other)::

    import pytest
    from cachekit import Cache
    from cachekit.testing import CacheContract

    class TestMyBackend(CacheContract):
        @pytest.fixture
        def make_cache(self):
            store = MyBackend()
            return lambda prefix: Cache(backend=store, prefix=prefix)

A backend whose caches must be closed (connections) yields from :func:`closing_caches`
instead: ``yield from closing_caches(lambda prefix: Cache(url, prefix=prefix))``.

Every test runs the sync and the async API. Needs pytest and pytest-asyncio
(``pip install 'cachekit[test]'``).

:mod:`cachekit.testing.servers` starts throwaway ``redis-server`` processes on free ports
(cachekit's own tests and benchmarks use it). It does not need pytest, which is why the
suite lives in :mod:`cachekit.testing.contract` and is loaded here on first use: a package's
``__init__`` runs before any of its submodules, so defining the suite here would make
``cachekit.testing.servers`` import pytest too.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .contract import CacheContract, closing_caches

__all__ = ["CacheContract", "closing_caches"]


def __getattr__(name: str) -> Any:  # PEP 562: `from cachekit.testing import CacheContract`
    if name in __all__:
        from . import contract

        return getattr(contract, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
