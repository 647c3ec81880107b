"""HTTP response caching as a shared cache (RFC 9111), one capability folder.

- pure, functions over values and a clock, no I/O: :mod:`~cachekit.http.rules` (what
  is cacheable and for how long, who may be served what, the lookup steps, 304s), over
  :mod:`~cachekit.http.headers` (field parsing), :mod:`~cachekit.http.keys` (URL keys,
  Vary variants, path purges), :mod:`~cachekit.http.cookies` (which cookies tell users
  apart) and :mod:`~cachekit.http.entries` (the stored bytes);
- ``_async_driver.py`` (:class:`AsyncHttpCache`, the source) and ``_sync_driver.py``
  (:class:`SyncHttpCache`, generated from it by ``scripts/unasync.py``): the reads and
  writes through a :class:`cachekit.Cache`, single-flight and cross-process locks; their
  shared state and the pure part of invalidation: :class:`HttpCache`;
- :mod:`cachekit.http.adapters`: what the framework adapters share beyond the drivers.

The framework adapters (``cachekit.integrations.*``) import only from here. No web
framework is imported.
"""

from __future__ import annotations

from ..core.concurrency import AsyncFlights, Flights
from . import rules
from ._async_driver import AsyncHttpCache, Handoff, adecided_nothing
from ._shared import (
    AsyncDecided,
    AsyncForwarder,
    AsyncHitHandler,
    CoalesceOptions,
    Decided,
    Forwarder,
    HitHandler,
    HttpCache,
    HttpCacheOptions,
    PagePolicyOptions,
    PolicyOptions,
    Probe,
    bytes_cache,
    split_options,
)
from ._sync_driver import SyncHttpCache, decided_nothing
from .adapters import caching_headers_from, decode_path, header_pairs, make_policy
from .rules import *  # noqa: F403  (the rules' public names, listed in rules.__all__)

__all__ = [
    *rules.__all__,
    "AsyncDecided",
    "AsyncFlights",
    "AsyncForwarder",
    "AsyncHitHandler",
    "AsyncHttpCache",
    "CoalesceOptions",
    "Decided",
    "Flights",
    "Forwarder",
    "HitHandler",
    "Handoff",
    "HttpCache",
    "HttpCacheOptions",
    "PagePolicyOptions",
    "PolicyOptions",
    "Probe",
    "SyncHttpCache",
    "adecided_nothing",
    "bytes_cache",
    "caching_headers_from",
    "decided_nothing",
    "decode_path",
    "header_pairs",
    "make_policy",
    "split_options",
]
