"""The near cache: an in-process L1 in front of Redis, coherent across processes.

``Cache(url, near=True)`` or ``near={"max_entries": 10_000, "max_stale": 1.0}``. The
:class:`~cachekit.Cache` wires it once (:func:`near_backends`): its Redis backends are
wrapped by :class:`NearBackend` / :class:`AsyncNearBackend` (the backend contract, the
inner backend's capabilities passed through, plus a ``decoding_reader`` the ``@cached``
hit path serves L1 hits with); no feature knows about it.

- :mod:`._store`: the L1 and its rules (fills, serving window, fences), no I/O.
- :mod:`._link`: the invalidation link (Redis client tracking, broadcast mode on the
  namespace prefix, redirected to a RESP2 connection subscribed to
  ``__redis__:invalidate``), one thread.
- :mod:`._cluster`: on a Redis Cluster, one link per primary and a watcher that follows
  the primaries (failover, nodes added or removed).
- :mod:`._layer`: what the sync and async wrappers share.

The guarantee: a read returns a value no older than ``max_stale`` seconds behind Redis
(a value replaced by a write that completed more than ``max_stale`` ago is never served),
whatever happens to the link or the server; this process's own writes of named keys are
seen at once (read your writes).
"""

from __future__ import annotations

from typing import Any

from ..core.generation import generation_key
from ..core.keys import GENERATION_MARK, Namespace
from ._async_backend import AsyncNearBackend
from ._cluster import ClusterLinks
from ._layer import NearLayer
from ._store import NearOptions, check_near_backend, near_option, parse_near
from ._sync_backend import NearBackend

__all__ = [
    "AsyncNearBackend",
    "NearBackend",
    "NearLayer",
    "NearOptions",
    "near_backends",
    "near_option",
    "parse_near",
]


def near_backends(
    backend: Any, async_backend: Any, options: NearOptions, namespace: Namespace
) -> tuple[Any, Any]:
    """The backend pair wrapped by one near layer tracking ``namespace``: its entries at
    every generation and its generation key (see :func:`tracked_prefixes`). A
    pair already wrapped (as :meth:`Cache.with_options` passes it: the layer tracks this
    namespace too) and an in-process
    backend (``memory://`` already is the near tier: one configuration serves a memory
    development set-up and a Redis production one) are returned as they are."""
    prefixes = tracked_prefixes(namespace)
    watched = generation_key(namespace)  # read past the L1: its change is what counts
    if isinstance(backend, NearBackend):
        for prefix in prefixes:
            backend.layer.track(prefix)
        backend.layer.track(watched, watched=True)
        return backend, async_backend
    if getattr(backend, "local", False):
        return backend, async_backend
    tracking = check_near_backend(backend)
    links = None
    if callable(getattr(tracking, "primaries", None)):  # a cluster: one link per primary

        def links(store: Any, prefixes: Any) -> ClusterLinks:
            return ClusterLinks(store, tracking, prefixes)

    layer = NearLayer(options, tracking.get, prefixes, links=links, watched=(watched,))
    wrapped = NearBackend(backend, layer)
    awrapped = None if async_backend is None else AsyncNearBackend(async_backend, layer)
    return wrapped, awrapped


def tracked_prefixes(namespace: Namespace) -> tuple[str, ...]:
    """The entries of a namespace the L1 keeps (and the link tracks): at generation 0
    (``{prefix}:{version}:``) and at every other (``{prefix}:{version}%g``). The link
    tracks its generation key too (a change of it expires the generation caches know)."""
    return (namespace.text, namespace.text[:-1] + GENERATION_MARK)
