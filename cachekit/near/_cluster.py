"""The near cache on a Redis Cluster: one invalidation link per primary.

Client tracking is per node: a node reports the writes of its own slots only. So
:class:`ClusterLinks` keeps one :class:`~._link.InvalidationLink` per primary, each with
the standalone rules (broadcast tracking of the namespace prefixes on its own subscribed
RESP2 connection, a ``PING`` every ``max_stale / 4``, a drop flushes the L1), and one
more thread, the watcher, which every ``max_stale / 4`` asks the cluster which nodes take
writes (the cluster backend's ``tracking()``:
:class:`~cachekit.backends.redis.clients.ClusterTracking`, redis-py's nodes and the
nodes' own ``CLUSTER NODES``).

- **Serving window.** The L1 serves until ``min(oldest answered PING among the links,
  last check that found the links cover every primary) + max_stale``: a link that drops
  or goes silent stops it (a drop also flushes it), and so does a watcher that cannot
  check the topology.
- **Topology changes.** A check that finds other primaries than the links cover (a
  failover, a node added or removed) stops the L1 and flushes it, closes the links of the
  nodes gone and opens links to the new ones: the L1 serves again once every link is
  tracking (flushed once more) and confirmed. A key no live link covers is never served.
- **Failures.** A link lost or a node not answering makes the next check read the slot
  map again first (redis-py's ``initialize``), at once.

The bound counts from when the cluster's nodes know of a change: a replica promoted
knows at once and is asked directly, so a failover is seen within one check.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from collections.abc import Sequence
from typing import Any

from ._link import InvalidationLink, connection_factory
from ._store import NearStore
from ._thread import ProcessThread

__all__ = ["ClusterLinks"]

logger = logging.getLogger(__name__)

_NEVER = -float("inf")


class _NodeView:
    """The L1 as one node's link sees it: invalidations and flushes reach the shared
    store; confirmations and losses go to :class:`ClusterLinks`, which confirms the store
    with the oldest of them."""

    __slots__ = ("_links", "_store", "confirmed", "max_stale", "name")

    def __init__(self, links: ClusterLinks, store: NearStore, name: str) -> None:
        self._links = links
        self._store = store
        self.name = name
        self.max_stale = store.max_stale
        self.confirmed = _NEVER  # when this link's last answered PING was sent

    def invalidate(self, keys: Any) -> None:
        self._store.invalidate(keys)

    def flush(self) -> None:
        self._store.flush()

    def confirm(self, sent_at: float) -> None:
        self._links._confirmed(self, sent_at)

    def stop_serving(self) -> None:
        self._links._lost(self)


class ClusterLinks:
    """The links of one near layer on a cluster; the :class:`InvalidationLink` interface
    the layer uses (start, ping, retrack, caught_up, close, connected, counters)."""

    def __init__(
        self,
        store: NearStore,
        tracking: Any,
        prefixes: Sequence[str],
        *,
        retry_interval: float = 0.2,
        clock: Any = time.monotonic,
    ) -> None:
        self.store = store
        self._tracking = tracking
        self.prefixes = list(dict.fromkeys(prefixes))
        self.ping_interval = store.max_stale / 4
        self.retry_interval = retry_interval
        self._clock = clock
        self._state = threading.Condition()  # links, views and confirmations
        self._links: dict[str, InvalidationLink] = {}
        self._views: dict[str, _NodeView] = {}
        self._checked = _NEVER  # when the last check that matched the links was sent
        self._refresh = False  # read the slot map again before the next check
        self._closed = threading.Event()
        self._wake = threading.Event()
        self._worker = ProcessThread(self._run, "cachekit-near-topology")
        self._gone_connects = 0  # of links closed by a topology change
        self._gone_failures = 0
        self.check_failures = 0
        self.rebuilds = 0
        self.last_error: str | None = None
        _cluster_links.add(self)

    # -- the InvalidationLink interface ---------------------------------------------------
    def ensure_started(self) -> None:
        self._worker.ensure(self._closed)
        for link in list(self._links.values()):
            link.ensure_started()

    def ping(self) -> None:
        for link in list(self._links.values()):
            link.ping()

    def retrack(self, prefixes: Sequence[str]) -> None:
        with self._state:
            self.prefixes = list(dict.fromkeys(prefixes))
            links = list(self._links.values())
        for link in links:
            link.retrack(self.prefixes)

    def caught_up(self, timeout: float) -> bool:
        """Every invalidation any primary sent before now applied, and a topology check
        sent after now found the links cover every primary; False after ``timeout``."""
        self.ensure_started()
        deadline = self._clock() + timeout
        while not self._closed.is_set():
            since = self._clock()
            self._wake.set()  # a check now, not at the next round
            with self._state:
                checked = self._state.wait_for(
                    lambda since=since: self._checked >= since or self._closed.is_set(),  # type: ignore[misc]
                    max(0.0, deadline - self._clock()),
                )
                links = dict(self._links)
            if not checked or self._closed.is_set():
                return False
            if all(link.caught_up(max(0.0, deadline - self._clock())) for link in links.values()):
                with self._state:
                    if self._links == links:
                        return True
            if self._clock() >= deadline:
                return False
        return False

    def close(self) -> None:
        self._closed.set()
        self._wake.set()
        with self._state:
            links = list(self._links.values())
            self._links.clear()
            self._views.clear()
            self._state.notify_all()
        for link in links:
            link.close()
            self._gone_connects += link.connects
            self._gone_failures += link.failures
        self._worker.join(timeout=2.0)
        self.store.stop_serving()

    @property
    def connected(self) -> bool:
        links = list(self._links.values())
        return bool(links) and all(link.connected for link in links)

    @property
    def connects(self) -> int:
        return self._gone_connects + sum(link.connects for link in list(self._links.values()))

    @property
    def failures(self) -> int:
        current = sum(link.failures for link in list(self._links.values()))
        return self._gone_failures + current + self.check_failures

    @property
    def nodes(self) -> list[str]:
        """The primaries linked now (``host:port``)."""
        return sorted(self._links)

    # -- what the links report --------------------------------------------------------
    def _confirmed(self, view: _NodeView, sent_at: float) -> None:
        with self._state:
            if self._views.get(view.name) is not view:
                return  # a link closed by a topology change
            view.confirmed = sent_at
            self._confirm()
            self._state.notify_all()

    def _confirm(self) -> None:  # caller holds self._state
        views = self._views.values()
        if not views or self._checked == _NEVER:
            return
        oldest = min(view.confirmed for view in views)
        if oldest != _NEVER:
            self.store.confirm(oldest, self._checked)

    def _lost(self, view: _NodeView) -> None:
        if self._worker.pid != os.getpid():  # a forked child resetting: no lock of the parent's
            view.confirmed = _NEVER
            self.store.stop_serving()
            return
        with self._state:
            view.confirmed = _NEVER
            self.store.stop_serving()
            current = self._views.get(view.name) is view
        if current and not self._closed.is_set():
            self._refresh = True  # the node may be gone: read the slot map again
            self._wake.set()

    # -- the watcher ------------------------------------------------------------------
    def _run(self) -> None:
        while not self._closed.is_set():
            try:
                self._check()
            except Exception as exc:
                if self._closed.is_set():
                    break
                self.check_failures += 1
                self._refresh = True
                message = f"{type(exc).__name__}: {exc}"
                if message != self.last_error:
                    logger.warning(
                        "near cache: cluster topology check failed (%s); L1 off", message
                    )
                self.last_error = message
            self._wake.wait(self.ping_interval if not self._refresh else self.retry_interval)
            self._wake.clear()

    def _check(self) -> None:
        if self._refresh:
            self._tracking.refresh()
            self._refresh = False
        sent = self._clock()
        primaries = self._tracking.primaries()
        if not primaries:
            raise ConnectionError("the cluster lists no primary")
        if set(primaries) != set(self._links):
            self._rebuild(primaries, sent)
        else:
            with self._state:
                self._checked = sent
                self._confirm()
                self._state.notify_all()
        if self.last_error is not None:
            logger.info("near cache: cluster topology check back")
            self.last_error = None

    def _rebuild(self, primaries: dict[str, Any], sent: float) -> None:
        """Links for these primaries: the L1 stops and is flushed (a node's keys may have
        moved where no link listened), the links of nodes gone close, new ones open."""
        with self._state:
            if self._closed.is_set():
                return
            self.store.stop_serving()
            gone = [self._links.pop(name) for name in list(self._links) if name not in primaries]
            for name in list(self._views):
                if name not in self._links:
                    del self._views[name]
            added: list[InvalidationLink] = []
            for name, client in primaries.items():
                if name in self._links:
                    continue
                view = _NodeView(self, self.store, name)
                link = InvalidationLink(
                    view,
                    connection_factory(client),
                    self.prefixes,
                    retry_interval=self.retry_interval,
                    clock=self._clock,
                )
                self._views[name] = view
                self._links[name] = link
                added.append(link)
            self._checked = sent
            self.rebuilds += 1
            self._state.notify_all()
        if self.rebuilds > 1:
            logger.info("near cache: cluster primaries now %s; L1 flushed", sorted(primaries))
        for link in gone:
            link.close()
            self._gone_connects += link.connects
            self._gone_failures += link.failures
        for link in added:
            link.ensure_started()

    def _after_fork(self) -> None:
        self._state = threading.Condition()
        self._worker.after_fork()
        self._refresh = True
        for view in list(self._views.values()):
            view.confirmed = _NEVER


_cluster_links: weakref.WeakSet[ClusterLinks] = weakref.WeakSet()


def _reset_after_fork() -> None:
    for links in list(_cluster_links):
        links._after_fork()


os.register_at_fork(after_in_child=_reset_after_fork)
