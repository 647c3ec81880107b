"""Tags: invalidating every entry written with ``tags=("users",)`` at once.

The choice: **tag sets**, not tag versions.

- *Tag sets* (chosen). Writing a tagged entry also adds its key to one set per tag
  (``SADD``, sent in the same pipeline as the ``SET``: one round trip, one extra command
  per tag). ``invalidate_tags("users")`` moves the set aside atomically and deletes its
  members in batches. Reads are untouched: a hit is still ONE ``GET`` and nothing else,
  and an untagged write is still one ``SET``. Invalidation costs O(members), paid once
  by the invalidating caller; entries disappear, so every process (and anything reading
  Redis directly) sees the invalidation at once.
- *Tag versions* (not chosen). Each tag has a counter; an entry records the counters it
  was written under and a read compares them. Invalidation is O(1) (``INCR``), but every
  read of a tagged entry must fetch the counters too: an ``MGET`` of entry + tag keys
  is one command only when the reader already knows the entry's tags (``@cached`` with
  fixed tags, not ``cache.get(key)``), a plain ``get`` needs a second round trip, and
  ``MGET`` across slots is refused by Redis Cluster. Invalidated entries also linger
  until their TTL. We keep the hit path at one command instead.

Costs and limits of tag sets (measured by ``benchmarks/bench_tags.py``):

- A tag set lives as long as its longest-lived member (its TTL is raised, never
  lowered; a member without expiry makes it persistent), so expired entries of a
  never-invalidated tag stay in its set until that TTL passes or the tag is invalidated.
  The memory backend prunes dead members as a set grows.
- Invalidation may over-delete (a key re-written later without the tag is still in the
  set and is deleted), never under-delete: the tag is registered *before* the entry is
  written, so a crash between the two leaves a harmless extra member.
- A write that races an invalidation (value computed before, stored after) survives it,
  exactly as with ``delete``; entries written after ``invalidate_tags`` started land in a
  fresh set and are invalidated by the next call, never lost from the index.
- Crash-safe: the set is moved to ``...:dying`` in one script; members are deleted and
  only then removed from it, so an interrupted invalidation is finished by the next one.

Redis Cluster: the tag set of tag ``t`` is ``#{prefix}:{version}:tag:{t}`` and its
dying twin ``...:{t}:dying``: the hash tag ``{t}`` puts both in one slot, so each Lua
script touches one slot. Entries live in their own slots; the deletes of an
invalidation are plain ``UNLINK`` batches that a cluster client must group by slot.
Tag sets are internal keys (:func:`cachekit.core.keys.internal_head`): ``delete_pattern()``
does not touch them, and ``clear()`` invalidates every tag of the namespace before it
deletes the entries, so no set outlives what it indexed and a tagged write racing the
clear lands in a fresh set (its entry may survive the clear, as with ``delete``, but
stays findable by its tags).
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterable, Sequence
from typing import Any

from ..backends.base import LocalState
from ..core.keys import internal_head
from ..exceptions import ConfigurationError

__all__ = [
    "INVALIDATE_SCRIPT",
    "REGISTER_SCRIPT",
    "MemoryTagIndex",
    "chunks",
    "dying_key",
    "memory_index",
    "script_sha",
    "tag_key",
    "tag_list",
    "tag_mark_key",
    "tag_set_ttl_ms",
]

TAG_KIND = "tag"
REGISTER_CHUNK = 1000  # entry keys per script call (Lua's unpack() has a stack limit)
INVALIDATE_BATCH = 1000  # members deleted per round trip

# KEYS[1] the tag set; ARGV[1] the set's TTL in ms, or "" (a member never expires);
# ARGV[2..] entry keys. The set's TTL only ever grows, and a persistent set stays so.
REGISTER_SCRIPT = """
local pttl = redis.call('PTTL', KEYS[1])
redis.call('SADD', KEYS[1], unpack(ARGV, 2))
if ARGV[1] == '' then
  redis.call('PERSIST', KEYS[1])
elseif pttl == -2 or (pttl >= 0 and pttl < tonumber(ARGV[1])) then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
end
return 1
"""

# KEYS[1] the tag set, KEYS[2] its dying twin (same slot). Writes after this go to a
# fresh set; members of an earlier, interrupted invalidation are merged in.
INVALIDATE_SCRIPT = """
if redis.call('EXISTS', KEYS[1]) == 1 then
  if redis.call('EXISTS', KEYS[2]) == 0 then
    redis.call('RENAME', KEYS[1], KEYS[2])
  else
    redis.call('SUNIONSTORE', KEYS[2], KEYS[2], KEYS[1])
    redis.call('DEL', KEYS[1])
  end
end
return redis.call('SCARD', KEYS[2])
"""


def script_sha(script: str) -> str:
    return hashlib.sha1(script.encode()).hexdigest()


REGISTER_SHA = script_sha(REGISTER_SCRIPT)
INVALIDATE_SHA = script_sha(INVALIDATE_SCRIPT)


def tag_list(tags: Iterable[str] | None) -> tuple[str, ...]:
    """Tags as a tuple (read once: a generator is not consumed twice), checked."""
    if not tags:
        return ()
    if isinstance(tags, (str, bytes)):
        raise ConfigurationError("tags must be an iterable of strings, e.g. tags=('users',)")
    out = tuple(dict.fromkeys(tags))
    for tag in out:
        if not isinstance(tag, str) or not tag:
            raise ConfigurationError(f"a tag must be a non-empty string, not {tag!r}")
    return out


def tag_key(namespace_text: str, tag: str) -> str:
    """The set of entry keys written with ``tag`` (``{tag}`` is the cluster hash tag)."""
    return f"{internal_head(namespace_text, TAG_KIND)}{{{tag}}}"


_MARK_SUFFIX = ":inv"


def tag_mark_key(tag_set_key: str) -> str:
    """The invalidation mark of a tag (see :mod:`cachekit.leases.rules`), in the tag's slot."""
    return tag_set_key + _MARK_SUFFIX


def dying_key(namespace_text: str, tag: str) -> str:
    return tag_key(namespace_text, tag) + DYING


DYING = ":dying"


def tag_set_pairs(names: Iterable[Any]) -> list[tuple[Any, Any]]:
    """``(set, dying twin)`` for tag-set keys a scan found (either of the two, str or the
    bytes Redis returns, kept as they are), once each."""
    pairs: dict[Any, Any] = {}
    for name in names:
        binary = isinstance(name, bytes)
        # a tag's invalidation mark (a string, "{tag}:inv") shares the head: not a set (a
        # set key ends with "}", its twin with ":dying"; no tag name makes either end so)
        if name.endswith(_MARK_SUFFIX.encode() if binary else _MARK_SUFFIX):
            continue
        dying: Any = DYING.encode() if binary else DYING
        live = name[: -len(dying)] if name.endswith(dying) else name
        pairs[live] = live + dying
    return list(pairs.items())


def tag_set_ttl_ms(seconds: float | None) -> str:
    """The script's TTL argument: the entry's TTL plus a second of slack, or no expiry."""
    return "" if seconds is None else str(int(seconds * 1000) + 1000)


def chunks(items: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class MemoryTagIndex:
    """Tag sets for an in-process backend: ``{tag key: {entry keys}}`` under a lock.

    One index per backend object (the sync and async sides of a memory cache share it).
    Dead members are pruned when a set doubles in size, so a set stays proportional to
    its live entries.
    """

    def __init__(self, backend: Any) -> None:
        self._backend = backend
        self._sets: dict[str, set[str]] = {}
        self._prune_at: dict[str, int] = {}
        self._lock = threading.Lock()

    def register(self, keys: Iterable[str], tag_keys: Iterable[str]) -> None:
        keys = list(keys)
        with self._lock:
            for name in tag_keys:
                members = self._sets.setdefault(name, set())
                if len(members) >= self._prune_at.get(name, 1024):
                    # before adding: the keys being registered are not written yet
                    exists = self._backend.exists
                    members.difference_update([k for k in members if not exists(k)])
                    self._prune_at[name] = max(1024, 2 * len(members))
                members.update(keys)

    def take_under(self, head: str) -> set[str]:
        """Remove every set whose name starts with ``head`` (``clear()``); their members."""
        with self._lock:
            names = [name for name in self._sets if name.startswith(head)]
        return self.take(names)

    def take(self, tag_keys: Iterable[str]) -> set[str]:
        """Remove the sets and return their members (the keys to delete)."""
        taken: set[str] = set()
        with self._lock:
            for name in tag_keys:
                taken.update(self._sets.pop(name, ()))
                self._prune_at.pop(name, None)
        return taken

    def __len__(self) -> int:
        return sum(len(members) for members in self._sets.values())


def memory_index(state: LocalState, backend: Any) -> MemoryTagIndex:
    """The tag index of an in-process store, kept in its ``local_state()`` (the sync and
    async sides, and every cache over the store, share it); ``backend`` is the sync side."""
    return state.get(MemoryTagIndex, lambda: MemoryTagIndex(backend))
