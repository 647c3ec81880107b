"""``cachekit`` commands: argument parsing, the connection, and each subcommand.

Every command works inside one namespace (``--prefix``, the cache's version): keys are
found with ``SCAN ... MATCH <namespace>*`` on every primary (never ``KEYS``), in batches of
``--count`` with ``--pause`` seconds between them, and each key found is checked to start
with the namespace before anything is done to it. Entries are read and deleted through the
cache's own API (its codec, its delete path), so what the command line sees and removes is
what the library would.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import inspect
import os
import pprint
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import orjson
import redis
from redis.exceptions import RedisClusterException

from .. import MISSING, Cache, __version__
from ..core.keys import escape_glob
from ..exceptions import BackendError, CacheKitError, ConfigurationError
from ..leases.rules import TOMBSTONE_HEAD

__all__ = ["NOT_OK", "NO_CONNECTION", "OK", "USAGE", "main"]

OK = 0
NOT_OK = 1  # a failed health check, a missing or undecodable key, a user function raising
USAGE = 2  # bad arguments or configuration (argparse's own code for usage errors)
NO_CONNECTION = 3  # Redis cannot be reached

_REDIS_SCHEMES = ("redis", "rediss", "unix", "redis+cluster", "redis+sentinel")
_PROGRESS_AFTER = 1.0  # seconds: shorter runs show no progress line
_PROGRESS_EVERY = 0.5


class Failure(Exception):
    """A command's clear ending: a message and an exit code."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


# -- output --------------------------------------------------------------------------------
def _jsonable(value: Any) -> Any:
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=repr)
    if isinstance(value, (bytes, bytearray, memoryview)):
        raw = bytes(value)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return repr(raw)
    return repr(value)


def to_json(data: Any) -> str:
    option = orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY
    try:
        return orjson.dumps(data, default=_jsonable, option=option).decode()
    except TypeError:  # a value orjson refuses even through default (e.g. a huge int)
        return orjson.dumps(_stringified(data), option=option).decode()


def _stringified(data: Any) -> Any:
    if isinstance(data, dict):
        return {str(k): _stringified(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [_stringified(v) for v in data]
    return data if isinstance(data, (str, float, bool)) or data is None else repr(data)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], right: Sequence[int] = ()) -> str:
    """A plain-text table: columns as wide as their widest cell; ``right``-aligned ones."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = []
    for n, row in enumerate(cells):
        parts = [
            cell.rjust(widths[i]) if i in right else cell.ljust(widths[i])
            for i, cell in enumerate(row)
        ]
        lines.append("  ".join(parts).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def human_bytes(size: float | None) -> str:
    if size is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(size) < 1024 or unit == "GiB":
            return f"{size:,.0f} {unit}" if unit == "B" else f"{size:,.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"  # pragma: no cover


def human_ttl(seconds: float | None) -> str:
    return "no expiry" if seconds is None else f"{seconds:,.1f} s"


class Output:
    def __init__(self, as_json: bool) -> None:
        self.json = as_json

    def emit(self, data: Any, human: Callable[[], str]) -> None:
        print(to_json(data) if self.json else human(), flush=True)

    def error(self, message: str, code: int) -> None:
        if self.json:
            print(to_json({"error": message, "exit": code}), flush=True)
        print(f"cachekit: {message}", file=sys.stderr, flush=True)


class Progress:
    """A progress line on stderr for long runs (shown after a second, updated twice a
    second; ``--progress`` forces it, a terminal turns it on)."""

    def __init__(self, label: str, enabled: bool) -> None:
        self.label = label
        self.enabled = enabled or sys.stderr.isatty()
        self.started = time.monotonic()
        self.shown = 0.0

    def update(self, text: str) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self.started >= _PROGRESS_AFTER and now - self.shown >= _PROGRESS_EVERY:
            self.shown = now
            end = "\r" if sys.stderr.isatty() else "\n"
            print(f"{self.label}: {text} ({now - self.started:.0f} s)", end=end, file=sys.stderr,
                  flush=True)  # fmt: skip

    def done(self) -> None:
        if self.shown and sys.stderr.isatty():
            print(file=sys.stderr, flush=True)


# -- the connection ------------------------------------------------------------------------
def masked(url: str) -> str:
    """A URL without its password (it ends up in terminals and logs)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))


class Target:
    """The cache the command line was pointed at, and a redis-py client of the same server
    (for what the cache does not offer: INFO, SCAN with a count, TYPE, MEMORY USAGE)."""

    def __init__(self, args: argparse.Namespace) -> None:
        env = dict(os.environ)
        if args.url:
            env["CACHEKIT_URL"] = args.url
        if not env.get("CACHEKIT_URL"):
            raise Failure(USAGE, "no Redis to talk to: give --url or set CACHEKIT_URL")
        # the library's own configuration path: CACHEKIT_* variables, the URL's query,
        # these arguments on top (errors are ConfigurationError, exit 2)
        # No near cache here even if CACHEKIT_NEAR asks for one: a command reads and
        # deletes in Redis itself (and Redis tells the apps' near caches of its deletes).
        self.cache = Cache.from_env(
            env, prefix=args.prefix, timeout=args.timeout, connect_timeout=args.timeout,
            on_error="raise", near=False,
        )  # fmt: skip
        self.url = masked(self.cache.url)
        if urlsplit(self.cache.url).scheme not in _REDIS_SCHEMES or not self.cache.shared:
            raise Failure(
                USAGE, f"the command line works on a Redis server ({', '.join(_REDIS_SCHEMES)}"
                f"), not {self.url}: an in-process store ends with its process",
            )  # fmt: skip
        self.ns = self.cache.namespace
        # the cache's own sync client (standalone, cluster or the Sentinel's primary, with
        # the timeouts above): the library's topology code, not a second reading of the URL
        self.client: Any = None
        self.count: int = args.count
        self.pause: float = args.pause
        try:
            self.client = self.cache.client  # a cluster asks for its slots
            self.client.ping()
        except (redis.RedisError, RedisClusterException, OSError) as exc:  # refused, timed out,
            # no primary, not Redis at all
            self.close()
            raise Failure(NO_CONNECTION, f"cannot connect to {self.url}: {exc}") from None
        # the entries at the namespace's current generation (cachekit.core.generation);
        # write-behind queues stay in the base namespace
        self.base = self.ns
        self.ns = self.cache._space()

    def primaries(self) -> list[Any]:
        """Every primary to scan: the one server, or each primary of a cluster client."""
        get_primaries = getattr(self.client, "get_primaries", None)
        if callable(get_primaries):
            return [self.client.get_redis_connection(node) for node in get_primaries()]
        return [self.client]

    def scan(self, match: str) -> Iterator[list[bytes]]:
        """Batches of keys matching ``match`` on every primary: SCAN with ``--count``,
        ``--pause`` seconds between calls (throttling: pacing a server others use)."""
        for node in self.primaries():
            cursor = 0
            while True:
                cursor, keys = node.scan(cursor, match=match, count=self.count)
                if keys:
                    yield keys
                if cursor == 0:
                    break
                if self.pause:
                    time.sleep(self.pause)

    def namespaced(self, keys: Sequence[bytes]) -> list[bytes]:
        """The keys that are this namespace's (a second check after SCAN's MATCH), but
        not those holding a tombstone (an invalidation kept in the key: no entry)."""
        head = self.ns.text.encode("utf-8", "surrogatepass")
        mine = [key for key in keys if key.startswith(head)]
        if not mine:
            return mine
        pipe = self.client.pipeline(transaction=False)
        for key in mine:
            pipe.getrange(key, 0, len(TOMBSTONE_HEAD) - 1)  # another type: an error, kept
        heads = pipe.execute(raise_on_error=False)
        return [key for key, first in zip(mine, heads) if first != TOMBSTONE_HEAD]

    def user_key(self, full: bytes) -> str:
        return self.ns.strip(full.decode("utf-8", "backslashreplace"))

    def close(self) -> None:
        self.cache.close()  # its client with it


# -- stats ---------------------------------------------------------------------------------
def _namespace_of(key: bytes) -> tuple[str, bool]:
    """The namespace a key belongs to, by its shape (``prefix:version:``, ``!owner:prefix:``;
    a leading ``#``: cachekit's bookkeeping of that namespace), and whether it is internal."""
    text = key.decode("utf-8", "backslashreplace")
    internal = text.startswith("#")
    if internal:
        text = text[1:]
    parts = text.split(":", 2)
    if len(parts) < 3:
        return "(other keys)", False
    return f"{parts[0]}:{parts[1]}:", internal


def _merged(info: dict[str, Any]) -> dict[str, Any]:
    """INFO of one server, or of a cluster's nodes ({node: info}) summed where it adds up."""
    if not info or not all(isinstance(v, dict) for v in info.values()):
        return info
    nodes = list(info.values())
    merged = dict(nodes[0])
    for key in ("keyspace_hits", "keyspace_misses", "used_memory", "maxmemory",
                "evicted_keys", "expired_keys"):  # fmt: skip
        merged[key] = sum(int(node.get(key, 0) or 0) for node in nodes)
    return merged


def cmd_stats(target: Target, args: argparse.Namespace, out: Output) -> int:
    client = target.client
    info = _merged(client.info())
    hits, misses = int(info.get("keyspace_hits", 0)), int(info.get("keyspace_misses", 0))
    dbsize = int(client.dbsize())
    groups: dict[str, dict[str, Any]] = {}
    examined = 0
    complete = True
    progress = Progress("stats", args.progress)
    for batch in target.scan("*"):
        for key in batch:
            name, internal = _namespace_of(key)
            group = groups.setdefault(name, {"keys": 0, "internal": 0, "sample": []})
            group["internal" if internal else "keys"] += 1
            if not internal and len(group["sample"]) < args.sample:
                group["sample"].append(key)
        examined += len(batch)
        progress.update(f"{examined:,} keys scanned")
        if examined >= args.scan_limit:
            complete = False
            break
    progress.done()
    scale = 1.0 if complete or not examined else dbsize / examined
    mine = target.ns.text
    groups.setdefault(mine, {"keys": 0, "internal": 0, "sample": []})
    ranked = sorted(groups.items(), key=lambda item: (item[0] != mine, -item[1]["keys"]))
    namespaces = []
    for name, group in ranked[: args.top]:
        memory = None
        if group["sample"]:
            pipe = client.pipeline(transaction=False)
            for key in group["sample"]:
                pipe.memory_usage(key)
            sizes = [s for s in pipe.execute() if s is not None]
            if sizes:
                memory = round(sum(sizes) / len(sizes) * group["keys"] * scale)
        namespaces.append({
            "namespace": name, "this_cache": name == mine,
            "keys": round(group["keys"] * scale), "internal_keys": round(group["internal"] * scale),
            "memory_bytes": memory, "memory_sampled": len(group["sample"]),
        })  # fmt: skip
    data: dict[str, Any] = {
        "server": {
            "url": target.url, "redis_version": info.get("redis_version"),
            "used_memory": info.get("used_memory"), "maxmemory": info.get("maxmemory"),
            "maxmemory_policy": info.get("maxmemory_policy"),
            "keyspace_hits": hits, "keyspace_misses": misses,
            "hit_rate": hits / (hits + misses) if hits + misses else None,
            "evicted_keys": info.get("evicted_keys"), "expired_keys": info.get("expired_keys"),
            "keys": dbsize,
        },
        "scan": {"examined": examined, "complete": complete, "estimated": not complete},
        "namespaces": namespaces,
    }  # fmt: skip

    def human() -> str:
        s = data["server"]
        rate = "-" if s["hit_rate"] is None else f"{s['hit_rate']:.1%}"
        limit = human_bytes(s["maxmemory"]) if s["maxmemory"] else "no limit"
        how = "exact" if complete else f"estimated from {examined:,} keys scanned"
        rows = [
            (("* " if n["this_cache"] else "  ") + n["namespace"], f"{n['keys']:,}",
             f"{n['internal_keys']:,}", human_bytes(n["memory_bytes"]))
            for n in namespaces
        ]  # fmt: skip
        return "\n".join([
            f"server     redis {s['redis_version']} at {s['url']}",
            f"memory     {human_bytes(s['used_memory'])} used (maxmemory {limit}, "
            f"policy {s['maxmemory_policy']}); {s['evicted_keys']} evicted, "
            f"{s['expired_keys']} expired",
            f"hit rate   {rate}: {hits:,} hits, {misses:,} misses (every client of the "
            f"server, since it started)",
            f"keys       {dbsize:,} in the database; per namespace ({how}; memory from "
            f"MEMORY USAGE of up to {args.sample} keys each):",
            "",
            table(["namespace (* this cache)", "keys", "internal", "memory"], rows, (1, 2, 3)),
        ])  # fmt: skip

    out.emit(data, human)
    return OK


# -- keys, inspect, ttl ---------------------------------------------------------------------
def cmd_keys(target: Target, args: argparse.Namespace, out: Output) -> int:
    found: list[str] = []
    truncated = False
    for batch in target.scan(target.ns.pattern(args.pattern)):
        for key in target.namespaced(batch):
            if len(found) >= args.limit:
                truncated = True
                break
            found.append(target.user_key(key))
        if truncated:
            break
    data = {"namespace": target.ns.text, "keys": found, "truncated": truncated}

    def human() -> str:
        lines = list(found)
        if truncated:
            lines.append(f"... (more than {args.limit}; raise --limit)")
        return "\n".join(lines) if lines else f"(no keys match {args.pattern!r})"

    out.emit(data, human)
    return OK


def cmd_inspect(target: Target, args: argparse.Namespace, out: Output) -> int:
    cache, client = target.cache, target.client
    full = cache.make_key(args.key)
    kind = bytes(client.type(full)).decode()
    if kind == "none":
        raise Failure(NOT_OK, f"no such key: {args.key!r} ({full!r})")
    memory = client.memory_usage(full)
    serializer = cache.serializer
    data: dict[str, Any] = {
        "key": args.key, "full_key": full, "type": kind, "ttl": None, "memory_bytes": memory,
        "serializer": getattr(serializer, "name", type(serializer).__qualname__),
    }  # fmt: skip
    if kind != "string":
        pttl = client.pttl(full)
        data.update(ttl=None if pttl is None or pttl < 0 else pttl / 1000, decoded=False,
                    note=f"a Redis {kind}, not a cachekit entry")  # fmt: skip
        out.emit(data, lambda: _inspect_human(data))
        return NOT_OK
    entry = cache.inspect(args.key)  # decoded by the cache's own codec, as a read would
    if entry is None:  # expired since TYPE
        raise Failure(NOT_OK, f"no such key: {args.key!r} ({full!r})")
    data.update(
        ttl=entry.ttl, size_bytes=entry.size, format=entry.format, decoded=entry.decoded,
        tags=list(entry.tags), value=entry.value, note=entry.note, metadata=dict(entry.metadata),
    )  # fmt: skip
    if entry.fresh_for is not None:  # stale_ttl / early_refresh: logical expiry
        data["fresh_for"] = entry.fresh_for  # < 0: served stale until ttl
    out.emit(data, lambda: _inspect_human(data))
    return OK if entry.decoded else NOT_OK


def _inspect_human(data: dict[str, Any]) -> str:
    lines = [
        f"key         {data['key']}",
        f"full key    {data['full_key']}",
        f"type        {data['type']}" + (f", {data['format']}" if "format" in data else ""),
        f"ttl         {human_ttl(data['ttl'])}",
        f"size        {data.get('size_bytes', '-')} bytes stored, "
        f"{human_bytes(data['memory_bytes'])} in Redis (MEMORY USAGE)",
        f"serializer  {data['serializer']}",
    ]
    if "fresh_for" in data:
        left = data["fresh_for"]
        fresh = (f"for {left:,.1f} s more, then stale until the ttl" if left > 0
                 else f"no: stale for {-left:,.1f} s (refreshed on the next call)")  # fmt: skip
        lines.append(f"fresh       {fresh}")
    if data.get("tags"):
        lines.append(f"tags        {', '.join(data['tags'])}")
    if data.get("metadata"):
        lines.append(f"metadata    {data['metadata']}")
    if data.get("note"):
        lines.append(f"note        {data['note']}")
    if data.get("decoded"):
        lines.append("value")
        lines.append("  " + pprint.pformat(data["value"], width=96).replace("\n", "\n  "))
    return "\n".join(lines)


def cmd_ttl(target: Target, args: argparse.Namespace, out: Output) -> int:
    left: Any = target.cache.ttl(args.key, MISSING)
    exists = left is not MISSING
    data = {"key": args.key, "exists": exists, "ttl": left if exists else None}
    out.emit(data, lambda: human_ttl(left) if exists else f"no such key: {args.key!r}")
    return OK if exists else NOT_OK


# -- purge ---------------------------------------------------------------------------------
def _delete(target: Target, keys: list[bytes]) -> int:
    """Delete namespaced keys through the cache (its delete path: counter marks, loads in
    flight), or, for a key the cache would spell otherwise, by UNLINK."""
    users: list[str] = []
    raw: list[bytes] = []
    for key in keys:
        user = target.user_key(key)
        if target.cache.make_key(user).encode("utf-8", "surrogatepass") == key:
            users.append(user)
        else:
            raw.append(key)
    deleted = target.cache.delete_many(users) if users else 0
    if raw:
        deleted += int(target.client.unlink(*raw))
    return deleted


def cmd_purge(target: Target, args: argparse.Namespace, out: Output) -> int:
    progress = Progress("purge", args.progress)
    sample: list[str] = []
    matched = deleted = 0
    if args.tag:
        # members of the tags' sets that still exist (dry run), or invalidate_tags
        for tag in args.tag:
            tag_set = target.cache.tag_key(tag)
            members = target.namespaced(list(target.client.sscan_iter(tag_set, count=target.count)))
            for start in range(0, len(members), 1000):
                chunk = members[start : start + 1000]
                pipe = target.client.pipeline(transaction=False)
                for key in chunk:
                    pipe.exists(key)
                alive = [key for key, there in zip(chunk, pipe.execute()) if there]
                matched += len(alive)
                sample.extend(target.user_key(k) for k in alive[: 10 - len(sample)])
        if not args.dry_run:
            deleted = target.cache.invalidate_tags(*args.tag)
    else:
        for batch in target.scan(target.ns.pattern(args.pattern)):
            keys = target.namespaced(batch)
            matched += len(keys)
            sample.extend(target.user_key(k) for k in keys[: max(0, 10 - len(sample))])
            if not args.dry_run and keys:
                deleted += _delete(target, keys)
            progress.update(f"{matched:,} matched, {deleted:,} deleted")
    progress.done()
    data = {
        "namespace": target.ns.text, "tags": args.tag or [], "pattern": args.pattern,
        "dry_run": args.dry_run, "matched": matched, "deleted": deleted, "sample": sample,
    }  # fmt: skip
    what = f"tag {', '.join(args.tag)}" if args.tag else f"pattern {args.pattern!r}"

    def human() -> str:
        ns = target.ns.text
        head = (f"dry run: {matched:,} keys of {ns} match {what}; nothing deleted"
                if args.dry_run else f"deleted {deleted:,} keys of {ns} ({what})")  # fmt: skip
        return "\n".join([head, *(f"  {key}" for key in sample)])

    out.emit(data, human)
    return OK


# -- write-behind ----------------------------------------------------------------------------
def _refuse(items: dict[Any, Any]) -> None:
    raise RuntimeError("the command line stores nothing")  # pragma: no cover (consume=False)


def _letters(letters: Sequence[Any]) -> list[dict[str, Any]]:
    return [{"attempts": letter.attempts, "error": letter.error,
             "items": [{"id": k, "value": v} for k, v in letter.items.items()]}
            for letter in letters]  # fmt: skip


def cmd_dead_letters(target: Target, args: argparse.Namespace, out: Output) -> int:
    if args.queue:
        queue = resolve_queue(args.queue, target)
    elif args.name:
        # a queue object of our own, reading only: consume=False (no worker stores), no
        # journal file; the dead letters live in Redis, beside the entries
        queue = target.cache.write_behind(args.name, _refuse, consume=False, journal_dir=False)
    else:
        head = escape_glob(target.base.internal("wb"))
        queues = []
        for batch in target.scan(head + "*:dead"):
            for key in batch:
                text = key.decode("utf-8", "backslashreplace")
                name = text[len(target.base.internal("wb")) :][: -len(":dead")]
                if name.startswith("{") and name.endswith("}"):
                    name = name[1:-1]
                queues.append({"name": name, "dead_letters": int(target.client.xlen(key))})
        data = {"namespace": target.ns.text, "queues": queues}
        out.emit(data, lambda: table(["write-behind queue", "dead letters"],
                                     [(q["name"], q["dead_letters"]) for q in queues], (1,))
                 if queues else "no dead letters in this namespace")  # fmt: skip
        return OK
    letters = _letters(queue.dead_letters())

    def human() -> str:
        if not letters:
            return "no dead letters"
        lines = []
        for n, letter in enumerate(letters, 1):
            lines.append(f"{n}. {len(letter['items'])} writes, {letter['attempts']} attempts: "
                         f"{letter['error']}")  # fmt: skip
            lines.extend(f"     {item['id']!r}: {item['value']!r}" for item in letter["items"])
        return "\n".join(lines)

    out.emit({"queue": queue.name, "dead_letters": letters}, human)
    return OK


def cmd_replay(target: Target, args: argparse.Namespace, out: Output) -> int:
    queue = resolve_queue(args.queue, target)
    queued = queue.replay()
    flushed = False
    if queued and getattr(queue, "consume", False):
        queue.flush(timeout=args.wait)  # this process's worker stores them (store_many)
        flushed = True
    left = len(queue.dead_letters())
    data = {"queue": queue.name, "replayed": queued, "flushed": flushed, "dead_letters": left}
    out.emit(data, lambda: f"replayed {queued} writes of {queue.name!r}"
             + (" and stored them" if flushed else " (queued for the workers)")
             + (f"; {left} dead letters now (they failed again)" if left else ""))  # fmt: skip
    return OK if not left else NOT_OK


# -- rate limits -----------------------------------------------------------------------------
def cmd_ratelimit(target: Target, args: argparse.Namespace, out: Output) -> int:
    make = getattr(target.cache, "rate_limiter", None)
    if make is None:
        raise Failure(NOT_OK, "this cachekit has no rate limits (Cache.rate_limiter)")
    limiter = make(args.name, args.rate, burst=args.burst, algorithm=args.algorithm)
    if args.action == "reset":
        had = bool(limiter.reset(args.id))
        data = {"name": args.name, "id": args.id, "reset": True, "had_usage": had}
        out.emit(data, lambda: f"reset {args.id!r} of {args.name!r}"
                 + ("" if had else " (it had no usage)"))  # fmt: skip
        return OK
    decision = limiter.peek(args.id)
    if decision.fallback:
        raise Failure(NO_CONNECTION, "Redis could not be asked for the rate limit")
    data = {
        "name": args.name, "id": args.id, "key": limiter.key(args.id),
        "algorithm": limiter.algorithm, "allowed": decision.allowed, "limit": decision.limit,
        "remaining": decision.remaining, "reset_after": decision.reset_after,
        "retry_after": decision.retry_after,
    }  # fmt: skip
    out.emit(data, lambda: table(["field", "value"], [(k, v) for k, v in data.items()]))
    return OK


# -- health ----------------------------------------------------------------------------------
def cmd_health(target: Target, args: argparse.Namespace, out: Output) -> int:
    health = getattr(target.cache, "health", None)
    if callable(health):  # the library's report (breaker, queues, ...), given our timeout
        data = {**health(timeout=args.timeout), "url": target.url}
    else:  # a cachekit without cache.health(): the server answers, and how fast
        latencies = []
        for _ in range(3):
            started = time.perf_counter()
            target.client.ping()
            latencies.append((time.perf_counter() - started) * 1000)
        memory = target.client.info("memory")
        data = {
            "ok": True, "backend": target.url, "latency_ms": round(sorted(latencies)[1], 3),
            "used_memory": memory.get("used_memory"), "maxmemory": memory.get("maxmemory"),
        }  # fmt: skip
    ok = bool(data.get("ok"))
    rows = [(k, v) for k, v in data.items() if k != "ok"]
    out.emit(data, lambda: ("ok" if ok else "NOT OK") + "\n" + table(["check", "value"], rows))
    return OK if ok else NOT_OK


# -- warm ------------------------------------------------------------------------------------
def resolve(spec: str) -> Any:
    """``package.module:attribute.path`` imported (the current directory importable, as
    with ``python -m``)."""
    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name or not attribute:
        raise Failure(USAGE, f"expected MODULE:NAME (e.g. myapp.cache:warm), not {spec!r}")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        found: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise Failure(USAGE, f"cannot import {module_name!r}: {exc}") from None
    for part in attribute.split("."):
        try:
            found = getattr(found, part)
        except AttributeError:
            raise Failure(USAGE, f"{module_name!r} has no {attribute!r}") from None
    return found


def resolve_queue(spec: str, target: Target) -> Any:
    obj = resolve(spec)
    if not hasattr(obj, "dead_letters") and callable(obj):
        obj = obj()
    if not (hasattr(obj, "dead_letters") and hasattr(obj, "replay")):
        raise Failure(USAGE, f"{spec} is not a write-behind queue (cache.write_behind(...))")
    return obj


def _user_env(args: argparse.Namespace) -> None:
    """The user's code configures its caches like we do (Cache.from_env): same server."""
    if args.url:
        os.environ["CACHEKIT_URL"] = args.url
    if args.prefix:
        os.environ["CACHEKIT_PREFIX"] = args.prefix


def cmd_warm(target: Target, args: argparse.Namespace, out: Output) -> int:
    func = resolve(args.function)
    if not callable(func):
        raise Failure(USAGE, f"{args.function} is not callable")
    kwargs: dict[str, Any] = {}
    try:
        if "cache" in inspect.signature(func).parameters:
            kwargs["cache"] = target.cache
    except (TypeError, ValueError):
        pass
    progress = Progress("warm", args.progress)
    started = time.monotonic()
    items = 0
    try:
        result = func(*args.args, **kwargs)
        if inspect.isawaitable(result):
            result = asyncio.run(_awaited(result))
        if inspect.isasyncgen(result):
            items = asyncio.run(_acount(result, progress))
        elif hasattr(result, "__next__"):  # a generator: one item per entry filled
            for _ in result:
                items += 1
                progress.update(f"{items:,} done")
        elif isinstance(result, int) and not isinstance(result, bool):
            items = result
    except Failure:
        raise
    except Exception as exc:
        import traceback

        traceback.print_exc()
        raise Failure(NOT_OK, f"{args.function} raised {type(exc).__name__}: {exc}") from None
    progress.done()
    seconds = time.monotonic() - started
    data = {"function": args.function, "items": items, "seconds": round(seconds, 3)}
    out.emit(data, lambda: f"warmed with {args.function}: {items:,} items in {seconds:.2f} s")
    return OK


async def _awaited(awaitable: Any) -> Any:
    return await awaitable


async def _acount(agen: Any, progress: Progress) -> int:
    items = 0
    async for _ in agen:
        items += 1
        progress.update(f"{items:,} done")
    return items


# -- the parser ------------------------------------------------------------------------------
EPILOG = """\
exit codes: 0 ok; 1 not ok (health check failed, key missing or undecodable, a user
function raised); 2 usage or configuration error; 3 cannot connect to Redis.
Configuration as the library: --url or CACHEKIT_URL, --prefix or CACHEKIT_PREFIX, and
every other CACHEKIT_* option (CACHEKIT_SECRET to read signed entries)."""


COMMANDS: dict[str, str] = {
    "stats": "server memory and hit rate; keys and memory per namespace",
    "keys": "this namespace's keys matching a glob (SCAN, never KEYS)",
    "inspect": "an entry: decoded value, TTL, size, tags, serializer",
    "ttl": "seconds an entry has left",
    "purge": "delete this namespace's entries by tag or by pattern",
    "dead-letters": "write-behind dead letters: per queue, or one queue's",
    "replay": "queue a write-behind queue's dead letters again",
    "ratelimit": "show or reset an identity's rate-limit state",
    "health": "is the cache healthy (exit 1 if not)",
    "warm": "call your function that fills the cache, with progress",
}
"""Each command and what it does (the help text; the demo lists them)."""


def _options(parser: argparse.ArgumentParser, top: bool) -> None:
    """The options every command takes, before or after its name (after it, an option
    given overrides the one before; not given, it leaves the top-level value alone)."""

    def default(value: Any) -> Any:
        return value if top else argparse.SUPPRESS

    parser.add_argument("--url", default=default(None),
                        help="the Redis URL (default: $CACHEKIT_URL)")  # fmt: skip
    parser.add_argument("--prefix", default=default(None),
                        help="the namespace's prefix (default: $CACHEKIT_PREFIX)")  # fmt: skip
    parser.add_argument("--timeout", type=float, default=default(3.0),
                        help="seconds to connect and per command (3)")  # fmt: skip
    parser.add_argument("--count", type=int, default=default(500),
                        help="SCAN COUNT per call (500)")  # fmt: skip
    parser.add_argument("--pause", type=float, default=default(0.002),
                        help="seconds between SCAN calls, to spare the server (0.002)")  # fmt: skip
    parser.add_argument("--json", action="store_true", default=default(False),
                        help="machine-readable output")  # fmt: skip
    parser.add_argument("--progress", action="store_true", default=default(False),
                        help="a progress line on stderr (default: on a terminal)")  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    _options(common, top=False)
    parser = argparse.ArgumentParser(
        prog="cachekit", description="Look at and act on a cachekit namespace in Redis.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    parser.add_argument("--version", action="version", version=f"cachekit {__version__}")
    _options(parser, top=True)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name: str, run: Callable[..., int]) -> argparse.ArgumentParser:
        text = COMMANDS[name]
        p = sub.add_parser(name, parents=[common], help=text, description=text)
        p.set_defaults(run=run)
        return p

    p = command("stats", cmd_stats)
    p.add_argument("--scan-limit", type=int, default=100_000,
                   help="keys scanned at most; past it, counts are estimates")  # fmt: skip
    p.add_argument("--sample", type=int, default=100, help="keys per namespace for MEMORY USAGE")
    p.add_argument("--top", type=int, default=10, help="namespaces shown (10)")
    p = command("keys", cmd_keys)
    p.add_argument("pattern", nargs="?", default="*", help="a glob over keys (default *)")
    p.add_argument("--limit", type=int, default=1000, help="keys listed at most (1000)")
    p = command("inspect", cmd_inspect)
    p.add_argument("key")
    p = command("ttl", cmd_ttl)
    p.add_argument("key")
    p = command("purge", cmd_purge)
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--tag", action="append", help="entries written with this tag (repeatable)")
    what.add_argument("--pattern", help="entries whose key matches this glob")
    p.add_argument("--dry-run", action="store_true", help="count and list, delete nothing")
    p = command("dead-letters", cmd_dead_letters)
    p.add_argument("name", nargs="?", help="a queue's name (write_behind's name=, else key=)")
    p.add_argument("--queue", metavar="MODULE:NAME", help="your WriteBehind object")
    p = command("replay", cmd_replay)
    p.add_argument("queue", metavar="MODULE:NAME",
                   help="your WriteBehind object (its store_many stores them)")  # fmt: skip
    p.add_argument("--wait", type=float, default=30.0, help="seconds to wait for the stores")
    p = command("ratelimit", cmd_ratelimit)
    p.add_argument("action", choices=("show", "reset"))
    p.add_argument("name", help="the limiter's name (cache.rate_limiter(name, ...))")
    p.add_argument("id", help="the identity (user id, IP, ...)")
    p.add_argument("--rate", default="100/minute", help="the limiter's rate (100/minute)")
    p.add_argument("--burst", type=int, help="the limiter's burst")
    p.add_argument("--algorithm", default="gcra", choices=("gcra", "sliding", "fixed"))
    command("health", cmd_health)
    p = command("warm", cmd_warm)
    p.add_argument("function", metavar="MODULE:FUNCTION",
                   help="may yield per entry (progress), return a count, take cache=")  # fmt: skip
    p.add_argument("args", nargs="*", help="string arguments passed to it")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; its exit code (see :mod:`cachekit.cli`)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0), a usage error (2)
        return exc.code if isinstance(exc.code, int) else USAGE
    out = Output(args.json)
    target: Target | None = None
    try:
        if args.command in ("warm", "replay", "dead-letters"):
            _user_env(args)
        target = Target(args)
        code: int = args.run(target, args, out)
        return code
    except Failure as failure:
        out.error(failure.message, failure.code)
        return failure.code
    except ConfigurationError as exc:
        out.error(str(exc), USAGE)
        return USAGE
    except (redis.ConnectionError, redis.TimeoutError, BackendError) as exc:
        out.error(f"lost the connection: {exc}", NO_CONNECTION)
        return NO_CONNECTION
    except (CacheKitError, redis.RedisError) as exc:  # e.g. a command the ACL refuses
        out.error(f"{type(exc).__name__}: {exc}", NOT_OK)
        return NOT_OK
    except KeyboardInterrupt:
        return 130
    finally:
        if target is not None:
            target.close()
