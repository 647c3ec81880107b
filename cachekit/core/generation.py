"""Namespace generations: ``cache.invalidate_all()`` as one counter bump (pure; no I/O).

A namespace has a *generation*, an integer kept in the backend under one key of the
namespace (:func:`generation_key`, ``#{prefix}:{version}:gen:``; a single key, so on one
cluster slot). Generation 0 (the key absent) spells every key exactly as before; generation
``n`` moves the namespace's *entries* to ``{prefix}:{version}%g{n}:``
(:meth:`Namespace.generation <cachekit.core.keys.Namespace.generation>`). On Redis
``invalidate_all()`` is one ``INCR``: every entry written before becomes unreachable at
once, in every process, and then leaves by its TTL or by eviction (``clear()`` removes
the entries of every generation). On memory (one process) ``invalidate_all()`` removes the
namespace's entries instead, and the generation never moves.

What moves with the generation, and what must not (every user of the namespace, audited):

- **Moves** (the entry namespace, ``Cache._ns``): entries of ``get``/``set``/...,
  ``@cached``, ``get_or_set``, the write strategies' entries, HTTP pages (stored through
  the key/value API) and the Django backend's entries; and their companions, all derived
  from the entry key or the entry namespace: invalidation marks (``inv``), stampede locks
  and wake-up lists of entries (``lock``, ``done:<token>``), counter marks (``counter``),
  tag sets and their dying sets (``tag``). So a load that started before a bump stores
  under the old generation, where nobody who knows the new one looks.
- **Stays** (the base namespace, ``Cache.namespace``): ``cache.lock(name)`` (a held lock
  stays held across a bump; so after a bump it is no longer the stampede lock of the
  entry ``name``, which moved; the HTTP page cache's coalescing lock is one of these, so
  it still coalesces one URL's misses), write-behind streams, dead letters and the in-process
  write queues (queued writes must survive), rate limits, sessions, the generation key
  itself, and the command line's view of the namespace (``cachekit keys`` and ``purge``
  scan the base; ``inspect`` reads the current generation).

How a process learns a bump made by another, without a round trip per hit: each cache
knows a generation and until when it trusts it (``valid_until``, monotonic). An operation
that builds keys first compares the clock with ``valid_until``, and only past it re-reads
the key (one ``GET``, at most once per ``generation_poll`` seconds per process; 0 reads it
on every call). A new process has read nothing, so its first operation reads it: it
never serves an old generation. A failed read keeps the generation known (fails open, as
every read); with the near cache the invalidation link tells a process at once that the
key changed (:meth:`Generation.expire`), so near processes see a bump within the link's
delay. The bound: **other processes see ``invalidate_all()`` within ``generation_poll``
seconds** (the caller's own process at once).
"""

from __future__ import annotations

import math
import re
import threading
import time
from collections.abc import Callable
from typing import Any

from .keys import GENERATION_MARK, INTERNAL_MARK, Namespace, escape_glob
from .sentinel import MISSING

__all__ = ["GENERATION_KIND", "Generation", "generation_key", "parse_generation"]

GENERATION_KIND = "gen"


def generation_key(base: Namespace) -> str:
    """The key holding the generation of ``base`` (an internal key: outside every pattern
    of the namespace, so ``clear()``, ``delete_pattern()`` and ``purge`` never reset it)."""
    return base.internal(GENERATION_KIND)


def parse_generation(stored: Any) -> int | None:
    """The generation in a stored value: 0 when absent (``None`` or cachekit's MISSING),
    None when it is not a counter's text (someone else's write: ignored, kept as known)."""
    if stored is None or stored is MISSING:
        return 0
    if isinstance(stored, bool) or not isinstance(stored, (bytes, str, int)):
        return None
    try:
        number = int(stored)
    except ValueError:
        return None
    return number if number >= 0 else None


class Generation:
    """The generation a cache knows, the namespace of its entries, and when to re-read it.

    Shared by the caches over one backend and namespace (``with_options``). ``movable`` is
    False for in-process backends: the generation stays 0 and nothing is ever read.
    """

    def __init__(
        self,
        base: Namespace,
        poll: float,
        movable: bool,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.base = base
        self.key = generation_key(base)
        self.poll = poll
        self.movable = movable
        self.clock = clock
        self.number = 0
        self.ns = base  # the namespace of entries now
        self.known = False  # read once at least (or set by a bump of ours)
        # never due when it cannot move; due at once otherwise (a fresh process reads it)
        self.valid_until = -math.inf if movable else math.inf
        self._epoch = 0  # bumped by every change: a read that started before is dropped
        self._lock = threading.Lock()
        head = re.escape(base.text[:-1] + GENERATION_MARK)
        self._generation_head = re.compile(head + r"[0-9]+:")
        self._internal_head = re.compile(re.escape(INTERNAL_MARK) + head + r"[0-9]+:")

    def due(self) -> bool:
        return self.clock() >= self.valid_until

    def reading(self) -> tuple[int, float]:
        """Before a read: the epoch to hand back to :meth:`learn`, and the read's time."""
        return self._epoch, self.clock()

    def learn(self, number: int, epoch: int, read_at: float) -> None:
        """The generation read (or bumped) at ``read_at``; ignored if something newer was
        learnt while the read was in flight (an older reply must not undo a bump)."""
        with self._lock:
            if epoch != self._epoch:
                return
            self._epoch += 1
            if number != self.number:
                self.number = number
                self.ns = self.base.generation(number)
            self.known = True
            self.valid_until = read_at + self.poll

    def bumped(self, number: int) -> None:
        """This process bumped the generation to ``number`` (the reply of its ``INCR``)."""
        with self._lock:
            self._epoch += 1
            if number != self.number:
                self.number = number
                self.ns = self.base.generation(number)
            self.known = True
            self.valid_until = self.clock() + self.poll

    def failed(self) -> None:
        """A read failed: the known generation stays (fail open), re-read after the poll
        interval; a generation never read is read again by the next operation."""
        if self.known:
            self.valid_until = self.clock() + self.poll

    def expire(self) -> None:
        """The generation key changed (the near cache's link said so): re-read it next."""
        if self.movable:
            with self._lock:
                self._epoch += 1
                self.valid_until = -math.inf

    def text_of(self, full_key: str) -> str:
        """The namespace text of an entry key of any generation of this namespace (its
        companions are derived from it, whatever generation is current now)."""
        current = self.ns.text
        if full_key.startswith(current):
            return current
        base = self.base.text
        if full_key.startswith(base):
            return base
        match = self._generation_head.match(full_key)
        return match.group(0) if match else current

    def is_generation_internal(self, key: str, kind: str) -> bool:
        """Whether ``key`` is an internal key of ``kind`` of a generation above 0."""
        match = self._internal_head.match(key)
        return match is not None and key.startswith(kind + ":", match.end())

    @property
    def internal_generations_pattern(self) -> str:
        """The glob over the internal keys of every generation above 0 (all kinds: filter
        with :meth:`is_generation_internal`)."""
        return escape_glob(INTERNAL_MARK + self.base.text[:-1] + GENERATION_MARK) + "*"
