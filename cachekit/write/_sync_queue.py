"""The write-behind queue's Redis I/O for sync callers.

Layout: :mod:`cachekit.write.stream_queue`.

GENERATED from ``cachekit/write/_async_queue.py`` by
``scripts/unasync.py`` -- do not edit; edit the async source and run the script.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterable, Sequence
from typing import Any

from ..backends import base
from .rules import DeadLetter, QueuedWrite
from .stream_queue import (
    ENSURE_SCRIPT,
    ENSURE_SHA,
    PUSH_SCRIPT,
    PUSH_SHA,
    SETTLE_SCRIPT,
    SETTLE_SHA,
    StreamQueueBase,
)

__all__ = ["StreamQueue"]

logger = logging.getLogger(__name__)


class StreamQueue(StreamQueueBase):
    """Over the backend's ``streams()`` and ``scripts()`` capabilities (asked once by the
    cache; :mod:`cachekit.backends.base`)."""

    def _streams(self) -> base.Streams:
        streams = self._cache._streams
        assert streams is not None  # the cache chose this queue because it has them
        return streams  # type: ignore[no-any-return]

    def _scripts(self) -> base.Scripts:
        scripts = self._cache._scripts
        assert scripts is not None
        return scripts  # type: ignore[no-any-return]

    def _eval(self, script: str, sha: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
        return self._scripts().run(script, keys, args)

    def push(self, item_id: Any, value: Any) -> bool:
        """Queue a write; True when a batch's worth is waiting. If Redis is away the write
        waits in this process's journal and is queued when it answers."""
        encoded_id = self._encode_id(item_id)
        encoded = self._dump(encoded_id, value)
        record = self._journal_add(item_id, value)
        if record.entry is None:  # behind an older write of this id that is held
            return False
        if self._cache._breaker.open:  # Redis is known to be away: no timeout per write
            self._push_failed(item_id, record)
            return False
        try:
            entry = self._eval(
                PUSH_SCRIPT, PUSH_SHA, [self.stream, self.latest_key], [encoded_id, encoded]
            )
        except Exception as exc:
            self._push_failed(item_id, record)
            logger.warning("write-behind queue unreachable, holding the write: %s", exc)
            return False
        with self._lock:
            if self._journal.get(item_id) is record:
                record.entry = entry
        self._since_pull += 1
        return self._since_pull >= self._batch_size

    def pull(self, count: int, holding: Iterable[Any] = ()) -> list[QueuedWrite]:
        """Up to ``count`` writes for this worker: ones a dead consumer left pending for
        ``claim_after`` seconds, then new ones. Never blocks."""
        held = set(holding)
        try:
            return self._pull(count, held)
        except Exception:
            # A read whose reply was lost (a timeout, a frozen Redis that later thawed and
            # ran it) delivered entries to this consumer that it never saw: they sit in its
            # pending list, where only a claim after claim_after would find them.
            self._lost_reply = True
            raise

    def _pull(self, count: int, held: set[Any]) -> list[QueuedWrite]:
        streams = self._streams()
        writes: list[QueuedWrite] = []
        if self._lost_reply:  # this consumer's own pending entries it does not hold
            wanted = count + len(held)
            own = {self.stream: "0"}
            reply = streams.xreadgroup(self.group, self.consumer, own, count=wanted)
            seen = 0
            for _, entries in reply or ():
                seen += len(entries)
                writes += [w for w in self._writes(entries) if w.entry not in held]
            writes = writes[:count]
            self._lost_reply = seen >= wanted  # a full reply: there may be more
        self._since_pull = 0
        now = time.monotonic()
        if len(writes) < count and now >= self._next_claim:
            self._next_claim = now + self.claim_after / 2
            reply = streams.xautoclaim(
                self.stream,
                self.group,
                self.consumer,
                min_idle_time=int(self.claim_after * 1000),
                start_id="0-0",
                count=count - len(writes),
            )
            mine = {w.entry for w in writes}
            writes += [w for w in self._writes(reply[1]) if w.entry not in held | mine]
        if len(writes) < count:
            reply = streams.xreadgroup(
                self.group, self.consumer, {self.stream: ">"}, count=count - len(writes)
            )
            for _, entries in reply or ():
                writes += self._writes(entries)
        return writes

    def latest(self, writes: Sequence[QueuedWrite]) -> dict[Any, Any]:
        """The newest entry of each id; also re-claims the entries (resets their idle
        time) so that no other worker takes over a batch this one is still retrying."""

        def fill(batch: base.CommandBatch) -> None:
            batch.xclaim(
                self.stream,
                self.group,
                self.consumer,
                min_idle_time=0,
                message_ids=[w.entry for w in writes],
                justid=True,
            )
            batch.hmget(self.latest_key, [self._encode_id(w.item_id) for w in writes])

        _, newest = self._scripts().batch(fill)
        # a mark is "<entry> <entries of the id in the stream>" (cachekit.write.stream_queue)
        return {w.item_id: e.split(b" ", 1)[0] for w, e in zip(writes, newest) if e is not None}

    def ack(self, writes: Sequence[QueuedWrite]) -> None:
        if writes:
            args = self._settle_args(writes, b"", "", 0)
            self._eval(SETTLE_SCRIPT, SETTLE_SHA, self._settle_keys(), args)
        self._journal_done(writes)

    def dead(
        self,
        current: Sequence[QueuedWrite],
        superseded: Sequence[QueuedWrite],
        error: str,
        attempts: int,
    ) -> None:
        payload = self._dead_payload(current)
        args = self._settle_args([*current, *superseded], payload, error, attempts)
        self._eval(SETTLE_SCRIPT, SETTLE_SHA, self._settle_keys(), args)
        self._journal_done([*current, *superseded])

    def _settle_keys(self) -> list[str]:
        return [self.stream, self.latest_key, self.dead_key]

    def dead_letters(self) -> list[DeadLetter]:
        return [self._dead_letter(e, f) for e, f in self._streams().xrange(self.dead_key)]

    def push_raw(self, raw_id: bytes, raw_value: bytes) -> None:
        """Queue a write as the raw fields it had (replaying an undecodable dead letter:
        if its cause is gone it is stored, else it comes back to the dead letters)."""
        keys = [self.stream, self.latest_key]
        self._eval(PUSH_SCRIPT, PUSH_SHA, keys, [raw_id, raw_value])

    def take_dead(self, letters: Sequence[DeadLetter] | None) -> list[DeadLetter]:
        """Remove dead letters for replay; only those this caller removed (two replaying
        processes do not both get one)."""
        chosen = self.dead_letters() if letters is None else list(letters)
        taken: list[DeadLetter] = []
        for letter in chosen:
            if letter.entries and self._streams().xdel(self.dead_key, *letter.entries):
                taken.append(letter)
        return taken

    def maintain(self, now: float, draining: bool) -> None:
        """Check that Redis still has the queue (else queue the journal again), forget
        journaled writes that are gone from the stream, and queue held-back writes."""
        if self._token is None or draining or now >= self._next_check:
            self._next_check = now + self._poll
            queued = self._journal_queued()

            def fill(batch: base.CommandBatch) -> None:
                batch.get(self.epoch_key)
                batch.xrange(self.stream, "-", "+", count=1)
                batch.xlen(self.stream)

            token, first, length = self._scripts().batch(fill)
            if token is None or token != self._token:
                token = self._eval(
                    ENSURE_SCRIPT,
                    ENSURE_SHA,
                    [self.stream, self.epoch_key],
                    [self.group, uuid.uuid4().hex],
                )
                self._adopt_token(token)
            else:
                self._stream_len = int(length)
                self.looks += 1
                self._journal_prune(queued, first[0][0] if first else None)
            self._resolve_loaded()
        backlog = self._backlog()
        if backlog:
            try:
                self._push_backlog(backlog)
            except BaseException:
                self._backlog_failed(backlog)
                raise

    def _push_backlog(self, backlog: Sequence[tuple[Any, Any]]) -> None:
        scripts = self._scripts()
        scripts.load(PUSH_SCRIPT)  # loaded first: this batch must not be repeated

        def fill(batch: base.CommandBatch) -> None:
            for item_id, record in backlog:
                raw_id = self._encode_id(item_id)
                args = [raw_id, self._dump(raw_id, record.value)]
                batch.evalsha(PUSH_SHA, 2, self.stream, self.latest_key, *args)

        entries = scripts.batch(fill)
        with self._lock:
            for (item_id, pushed), entry in zip(backlog, entries):
                current = self._journal.get(item_id)
                if current is not None and current is pushed:
                    current.entry = entry
        self._stream_len += len(backlog)
