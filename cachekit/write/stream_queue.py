"""The write-behind queue in Redis: the keys, the scripts, and this process's journal.

Layout (``{name}`` is the cluster hash tag, so every script touches one slot)::

    #{prefix}:{version}:wb:{name}          a stream; consumer group "cachekit"
    #{prefix}:{version}:wb:{name}:latest   hash: encoded item id -> "newest entry id n"
    #{prefix}:{version}:wb:{name}:dead     a stream of dead-lettered batches
    #{prefix}:{version}:wb:{name}:epoch    a token, made with the consumer group

These are internal keys (:func:`cachekit.core.keys.internal_head`), outside the namespace's
pattern: ``clear()`` and ``delete_pattern()`` never drop a queued write or a dead letter.

``set()`` adds an entry and records it as the id's newest (one script). A worker reads
with ``XREADGROUP`` (so a batch is in its pending list, not lost, if it dies), stores the
writes no newer entry of their id supersedes, then acknowledges and deletes the entries
in one script, which forgets an id's mark with its last entry in the stream; entries a
dead consumer left pending are taken over with ``XAUTOCLAIM`` after ``claim_after``.
Delivery is therefore **at least once**: a worker that dies after ``store_many``
returned and before the acknowledgement has its batch stored again by another one.

The journal: every process also keeps the writes *it* queued until it sees them gone
from the stream (stored or dead-lettered, by any process). If Redis forgets the queue
(a restart without persistence, a failover that lost writes; detected because the epoch
token changed) the journal is queued again, and while Redis is unreachable new writes
wait in the journal and are queued when it answers (``set()`` does not wait for Redis
while the cache's circuit breaker is open). A process that exits with journaled writes
(``close()`` and exit wait ``exit_timeout`` at most) writes them to a journal file
(:mod:`cachekit.write.journal`), with each one's stream entry and epoch token, and the next
process starting the queue journals them again: those still in the stream under the same
epoch are only watched, the others queued. So a write is lost only if Redis loses it *and*
the process that queued it is killed without exiting.

Ids are encoded by :func:`cachekit.write.rules.encode_id` (canonical and type-faithful,
whatever the serializer); an entry that does not decode is an
:class:`~cachekit.write.rules.Undecodable`, dead-lettered with its raw bytes.
"""

from __future__ import annotations

import base64
import logging
import os
import socket
import threading
import uuid
from collections.abc import Iterable, Sequence
from typing import Any

import orjson

from ..core.sentinel import MISSING
from ..tags.rules import script_sha
from .rules import DeadLetter, QueuedWrite, Undecodable, decode_id, encode_id, entry_order

__all__ = ["StreamQueueBase"]

logger = logging.getLogger(__name__)

# The newest-entry mark of an id, in ``latest``: "<entry id> <n>", n the id's entries in
# the stream. It is kept until the last of them is settled, not only until the newest is:
# an older write of the id still pending (a batch retried, or taken over from a worker
# that died) must still find itself superseded after the newest was stored, or it would be
# stored over it. (A mark without " <n>", from an older cachekit, is dropped with its
# entry, as it was then.)
# KEYS: stream, latest. ARGV: encoded id, encoded value. -> the entry id
PUSH_SCRIPT = """
local entry = redis.call('XADD', KEYS[1], '*', 'i', ARGV[1], 'v', ARGV[2])
local mark = redis.call('HGET', KEYS[2], ARGV[1])
local n = 0
if mark then n = tonumber(string.match(mark, ' (%d+)$')) or 1 end
redis.call('HSET', KEYS[2], ARGV[1], entry .. ' ' .. (n + 1))
return entry
"""

# KEYS: stream, latest, dead. ARGV: group, dead payload (see _dead_payload) or '', error,
# attempts, then
# (entry id, encoded item id) pairs: acknowledge, delete, and count the entry out of its
# id's mark (forgotten with the id's last entry). An entry already deleted (settled twice:
# a reply lost) is not counted again.
SETTLE_SCRIPT = """
if ARGV[2] ~= '' then
  redis.call('XADD', KEYS[3], '*', 'items', ARGV[2], 'error', ARGV[3], 'attempts', ARGV[4])
end
for i = 5, #ARGV, 2 do
  redis.call('XACK', KEYS[1], ARGV[1], ARGV[i])
  if redis.call('XDEL', KEYS[1], ARGV[i]) == 1 then
    local mark = redis.call('HGET', KEYS[2], ARGV[i + 1])
    if mark then
      local newest, n = string.match(mark, '^(%S+) (%d+)$')
      if not newest then
        if mark == ARGV[i] then redis.call('HDEL', KEYS[2], ARGV[i + 1]) end
      elseif tonumber(n) <= 1 then
        redis.call('HDEL', KEYS[2], ARGV[i + 1])
      else
        redis.call('HSET', KEYS[2], ARGV[i + 1], newest .. ' ' .. (tonumber(n) - 1))
      end
    end
  end
end
return 1
"""

# KEYS: stream, epoch. ARGV: group, a new token. The group and its epoch token are made
# together; the token changes only when Redis lost both.
ENSURE_SCRIPT = """
local token = redis.call('GET', KEYS[2])
if not token then
  redis.pcall('XGROUP', 'CREATE', KEYS[1], ARGV[1], '0', 'MKSTREAM')
  redis.call('SET', KEYS[2], ARGV[2])
  token = ARGV[2]
end
return token
"""

PUSH_SHA = script_sha(PUSH_SCRIPT)
SETTLE_SHA = script_sha(SETTLE_SCRIPT)
ENSURE_SHA = script_sha(ENSURE_SCRIPT)


PUSHING = "pushing"
# the worker is queueing it again (the backlog: Redis was away): a newer write of the id
# waits behind it (see _journal_add)
REPLAYING = "replaying"


class _Journaled:
    """A write this process queued and has not yet seen stored."""

    __slots__ = ("entry", "value")

    def __init__(self, value: Any) -> None:
        # the stream entry id; PUSHING while set() is sending it; None when it is not in
        # Redis (Redis was away, or forgot it): the worker queues it again, REPLAYING
        # while it does
        self.entry: Any = PUSHING
        self.value = value


class StreamQueueBase:
    shared = True
    group = "cachekit"

    def __init__(
        self,
        cache: Any,
        name: str,
        batch_size: int,
        *,
        claim_after: float,
        poll: float,
    ) -> None:
        base = f"{cache.namespace.internal('wb')}{{{name}}}"
        self.stream = base
        self.latest_key = base + ":latest"
        self.dead_key = base + ":dead"
        self.epoch_key = base + ":epoch"
        self.consumer = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._cache = cache
        self._codec = cache._codec
        self._batch_size = batch_size
        self.claim_after = claim_after
        self._poll = poll
        self._journal: dict[Any, _Journaled] = {}
        self._lock = threading.Lock()
        self._token: bytes | None = None
        self.epoch = 0  # bumped when Redis lost the queue: the worker drops what it holds
        self._stream_len = 0
        self.looks = 0  # how many times the stream's length was read
        self._since_pull = 0
        self._next_claim = 0.0
        self._lost_reply = False  # read this consumer's own pending entries first
        self._next_check = 0.0

    # -- encoding -----------------------------------------------------------------------
    # Ids use their own canonical, type-faithful encoding (cachekit.write.rules.encode_id),
    # whatever the cache's serializer: a tuple id comes back a tuple, equal ids coalesce.
    # Values use the cache's codec, bound to this stream and the id (see _record_key).
    def _record_key(self, raw_id: bytes) -> str:
        """What a queued value is signed under (with a ``secret``): the stream key and the
        encoded id. A record moved to another queue or given another id does not verify
        (it becomes an Undecodable, dead-lettered); one copied from the cache's entries
        does not either: their keys never start with the internal mark. The id's hex has
        no newline, so the pair is told apart at the last one whatever the stream's name.
        """
        return f"{self.stream}\n{raw_id.hex()}"

    def _dump(self, raw_id: bytes, value: Any) -> bytes:
        encoded: bytes = self._codec.dumps(value, None, self._record_key(raw_id))
        return encoded

    def _load(self, raw_id: bytes, raw_value: bytes) -> Any:
        return self._codec.loads(raw_value, self._record_key(raw_id))

    @staticmethod
    def _encode_id(item_id: Any) -> bytes:
        if isinstance(item_id, Undecodable):
            return item_id.raw_id
        return encode_id(item_id)

    def _decode(self, entry: Any, raw_id: bytes, raw_value: bytes) -> QueuedWrite:
        """One write; an entry that does not decode becomes an :class:`Undecodable` (the
        worker retries it alone and then dead-letters it: it never wedges its batch)."""
        try:
            return QueuedWrite(entry, decode_id(raw_id), self._load(raw_id, raw_value))
        except Exception as exc:
            return QueuedWrite(entry, Undecodable(raw_id, raw_value, _describe(exc)), None)

    def _writes(self, entries: Iterable[Any]) -> list[QueuedWrite]:
        writes: list[QueuedWrite] = []
        for entry, fields in entries:
            if not fields:  # deleted while pending (acknowledged by someone else)
                continue
            writes.append(self._decode(entry, fields.get(b"i", b""), fields.get(b"v", b"")))
        return writes

    def redecode(self, writes: Sequence[QueuedWrite]) -> list[QueuedWrite]:
        """Try the undecodable writes again (a retry may find the cause gone)."""
        return [
            self._decode(w.entry, w.item_id.raw_id, w.item_id.raw_value)
            if isinstance(w.item_id, Undecodable)
            else w
            for w in writes
        ]

    def _raw(self, write: QueuedWrite) -> tuple[bytes, bytes]:
        if isinstance(write.item_id, Undecodable):
            return write.item_id.raw_id, write.item_id.raw_value
        raw_id = encode_id(write.item_id)
        return raw_id, self._dump(raw_id, write.value)

    def _dead_payload(self, writes: Sequence[QueuedWrite]) -> bytes:
        """A dead letter's items: the raw (id, value) fields, base64 in a JSON array, so
        an undecodable write is kept byte for byte."""
        pairs = [[base64.b64encode(part).decode() for part in self._raw(w)] for w in writes]
        return orjson.dumps(pairs)

    def _dead_letter(self, entry: Any, fields: dict[bytes, Any]) -> DeadLetter:
        items: dict[Any, Any] = {}
        for raw_id, raw_value in orjson.loads(fields[b"items"]):
            write = self._decode(entry, base64.b64decode(raw_id), base64.b64decode(raw_value))
            items[write.item_id] = write.value
        error = fields[b"error"].decode("utf-8", "replace")
        return DeadLetter(items, error, int(fields[b"attempts"]), [entry])

    def _settle_args(
        self, writes: Sequence[QueuedWrite], payload: bytes, error: str, attempts: int
    ) -> list[Any]:
        args: list[Any] = [self.group, payload, error, attempts]
        for write in writes:
            args += [write.entry, self._encode_id(write.item_id)]
        return args

    # -- the journal ----------------------------------------------------------------------
    def _journal_add(self, item_id: Any, value: Any) -> _Journaled:
        """Journal a write; its ``entry`` is None if it must wait for the worker to queue it.

        Writes of one id must reach the stream in the order they were made: the newest
        entry of an id is the one stored. While an older write of the id is held (Redis was
        away: it is in the backlog) or being queued again by the worker, this one must not
        be queued before it, or the stream would hold new-then-old and the old value would
        win. So it waits behind it, in the backlog (it replaces the older one there: only
        the newest is queued; if the older one's queueing is in flight, this one is queued
        after it)."""
        record = _Journaled(value)
        with self._lock:
            older = self._journal.get(item_id)
            if older is not None and (older.entry is None or older.entry is REPLAYING):
                record.entry = None
            self._journal[item_id] = record
        return record

    def _journal_done(self, writes: Iterable[QueuedWrite]) -> None:
        with self._lock:
            for write in writes:
                record = self._journal.get(write.item_id)
                if record is not None and record.entry == write.entry:
                    del self._journal[write.item_id]

    def _journal_queued(self) -> list[tuple[Any, _Journaled]]:
        """The journaled writes already in Redis (taken *before* looking at the stream:
        a write queued after the look must not be judged by it)."""
        with self._lock:
            return [(i, r) for i, r in self._journal.items() if isinstance(r.entry, bytes)]

    def _journal_prune(self, queued: Sequence[tuple[Any, _Journaled]], oldest: Any) -> None:
        """Of ``queued``, forget those older than the oldest entry still in the stream:
        entries are deleted from the stream when stored or dead-lettered."""
        with self._lock:
            for item_id, record in queued:
                if self._journal.get(item_id) is not record:
                    continue
                if oldest is None or entry_order(record.entry) < entry_order(oldest):
                    del self._journal[item_id]

    def _push_failed(self, item_id: Any, record: _Journaled) -> None:
        with self._lock:
            if self._journal.get(item_id) is record:
                record.entry = None

    def _backlog(self) -> list[tuple[Any, _Journaled]]:
        """The held writes, to queue now: marked REPLAYING (a newer write of one of these
        ids, made while they are sent, waits for the next round: see _journal_add)."""
        with self._lock:
            backlog = [(i, r) for i, r in self._journal.items() if r.entry is None]
            for _, record in backlog:
                record.entry = REPLAYING
            return backlog

    def _backlog_failed(self, backlog: Sequence[tuple[Any, _Journaled]]) -> None:
        """Queueing the backlog failed: held again (its entries may still have reached the
        stream, a lost reply; queued again they are newer, so the order holds)."""
        with self._lock:
            for _, record in backlog:
                if record.entry is REPLAYING:
                    record.entry = None

    def _forget_entries(self) -> None:
        """Redis lost the queue: every journaled write must be queued again."""
        with self._lock:
            for record in self._journal.values():
                record.entry = None

    def _adopt_token(self, token: Any) -> bool:
        """Remember the epoch token; True if it changed (Redis lost the queue)."""
        lost = self._token is not None and token != self._token
        self._token = token
        if lost:
            self.epoch += 1
            self._forget_entries()
            logger.warning(
                "the write-behind queue %r was lost by Redis; queueing again the "
                "%d writes this process has not seen stored",
                self.stream,
                len(self._journal),
            )
        return lost

    # -- the journal on disk (cachekit.write.journal) ----------------------------------------------
    def journal_identity(self) -> str:
        """Which queue this is, for its journal files: the server and the stream key."""
        return f"redis|{self._cache._streams.identity()}|{self.stream}"

    def spill_records(self) -> list[tuple[Any, ...]]:
        """Every journaled write, encoded: ``(id, value, stream entry or None, epoch
        token)``. One already in the stream is queued again by the replaying process only
        if Redis lost the queue since (its epoch token changed), so it is not stored twice
        when Redis kept it."""
        with self._lock:
            journaled = list(self._journal.items())
        records: list[tuple[Any, ...]] = []
        for item_id, record in journaled:
            entry, token = record.entry, self._token
            if isinstance(entry, tuple):  # loaded from a journal file, not yet resolved
                _, token, entry = entry
            elif not isinstance(entry, bytes):  # not in Redis (or not known to be)
                entry = token = None
            raw_id = encode_id(item_id)
            records.append((raw_id, self._dump(raw_id, record.value), entry, token))
        return records

    def load_spilled(self, content: dict[str, Any]) -> list[Any]:
        """Journal the writes of a journal file (an id this process wrote since is newer,
        and kept); markers for :meth:`spilled_safe`."""
        markers: list[Any] = []
        failed = 0
        for raw_id, raw_value, entry, token in content["records"]:
            try:
                item_id, value = decode_id(raw_id), self._load(raw_id, raw_value)
            except Exception:
                failed += 1
                continue
            record = _Journaled(value)
            # in the stream when it was written: confirmed (or not) once the epoch is known
            record.entry = None if entry is None else ("journal", token, entry)
            with self._lock:
                if item_id in self._journal:
                    continue
                self._journal[item_id] = record
            markers.append((item_id, record))
        if failed:
            logger.error(
                "%d writes of a write-behind journal file for %r do not decode (another "
                "serializer or secret?) and were dropped",
                failed,
                self.stream,
            )
        return markers

    def spilled_safe(self, markers: Sequence[tuple[Any, _Journaled]]) -> bool:
        """True once every loaded write is in the stream again, stored, or superseded."""
        with self._lock:
            for item_id, record in markers:
                if self._journal.get(item_id) is record and not isinstance(record.entry, bytes):
                    return False
            return True

    def _resolve_loaded(self) -> None:
        """Writes loaded from a journal file that were in the stream: still there if the
        epoch token is the one they were queued under, else queue them again."""
        with self._lock:
            for record in self._journal.values():
                if isinstance(record.entry, tuple):
                    _, token, entry = record.entry
                    record.entry = entry if token == self._token else None

    def unstored(self, item_id: Any) -> Any:
        record = self._journal.get(item_id)
        return MISSING if record is None else record.value

    def outstanding(self, shared: bool = False) -> int:
        """Writes of this process not yet seen stored (``shared``: or anyone's)."""
        mine = len(self._journal)
        return max(mine, self._stream_len) if shared else mine


def _describe(exc: BaseException) -> str:
    return f"cannot decode the queued write: {type(exc).__name__}: {exc}"
