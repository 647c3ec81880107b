#!/usr/bin/env python
"""Generate cachekit/_sync/*.py from cachekit/_async/*.py (the httpcore way), and the
sync twins of the async sources listed in PAIRS.

    python scripts/unasync.py           rewrite the generated files
    python scripts/unasync.py --check   exit 1 if a generated file is stale, or if a
                                        substitution below is no longer used anywhere

Only whole words are replaced, so ``aget`` becomes ``get`` but ``target`` stays.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "cachekit" / "_async"
TARGET = ROOT / "cachekit" / "_sync"
# (async source, generated sync twin) outside cachekit/_async: the core never imports
# integrations/, so Django's page flow is generated beside its adapter
PAIRS = [
    (
        ROOT / "cachekit" / "backends" / "redis" / "_async_backend.py",
        ROOT / "cachekit" / "backends" / "redis" / "_sync_backend.py",
    ),
    (
        ROOT / "integrations" / "django" / "_page_async.py",
        ROOT / "integrations" / "django" / "_page_sync.py",
    ),
    # rate limiting (engineer D). Named by the coming convention (_async_<name>.py, AsyncX,
    # async def a...): this row and the ratelimit SUBS rows go once the script discovers them
    (
        ROOT / "cachekit" / "ratelimit" / "_async_limiter.py",
        ROOT / "cachekit" / "ratelimit" / "_sync_limiter.py",
    ),
    # the near cache (engineer C), named by the same convention: goes with the row above
    (
        ROOT / "cachekit" / "near" / "_async_backend.py",
        ROOT / "cachekit" / "near" / "_sync_backend.py",
    ),
]

SUBS: dict[str, str] = {
    "async def": "def",
    "async with": "with",
    "async for": "for",
    "await ": "",
    "AsyncRedisBackend": "RedisBackend",
    "AsyncRedisAccess": "RedisAccess",
    "AsyncRedisClusterBackend": "RedisClusterBackend",
    "_AsyncBatch": "_SyncBatch",
    "AsyncClientProvider": "SyncClientProvider",
    "AsyncCacheOps": "SyncCacheOps",
    "make_async_wrapper": "make_sync_wrapper",
    "make_async_stampede_wrapper": "make_sync_stampede_wrapper",
    "_abackend": "_backend",
    "_alookup": "_lookup",
    "_afetch": "_fetch",
    "_astore": "_store",
    "_acall": "_call",
    "_aresolve": "_resolve",
    "aget": "get",
    "aset": "set",
    "aadd": "add",
    "adelete": "delete",
    "aget_many": "get_many",
    "aset_many": "set_many",
    "adelete_many": "delete_many",
    "aexists": "exists",
    "attl": "ttl",
    "aexpire": "expire",
    "aincr": "incr",
    "aclear": "clear",
    "adelete_pattern": "delete_pattern",
    "aget_or_set": "get_or_set",
    "aping": "ping",
    "aclose": "close",
    "arefresh": "refresh",
    # tags and write strategies
    "AsyncTagOps": "SyncTagOps",
    "_aset_tagged": "_set_tagged",
    "_aregister_tags": "_register_tags",
    "_aredis_write": "_redis_write",
    "ainvalidate_tags": "invalidate_tags",
    "_ainvalidate_in_redis": "_invalidate_in_redis",
    "_ainvalidate_sets": "_invalidate_sets",
    "_aclear_tags": "_clear_tags",
    "AsyncWriteThroughOps": "SyncWriteThroughOps",
    "AsyncWriteBehindOps": "SyncWriteBehindOps",
    "AsyncStreamQueue": "StreamQueue",
    "make_async_updates": "make_sync_updates",
    "make_async_invalidates": "make_sync_invalidates",
    "acall_store": "call_store",
    "acall_user": "call_user",
    "aflush": "flush",
    "adead_letters": "dead_letters",
    "areplay": "replay",
    "apush": "push",
    "apull": "pull",
    "_apull": "_pull",
    "alatest": "latest",
    "aack": "ack",
    "adead": "dead",
    "atake_dead": "take_dead",
    "amaintain": "maintain",
    "_arun": "_run",
    "_astep": "_step",
    "_astore_batch": "_store_batch",
    "_abatch_failed": "_batch_failed",
    "apush_raw": "push_raw",
    "_aack": "_ack",
    "_astart_worker": "_start_worker",
    "AsyncScripts": "Scripts",
    "AsyncWakeups": "Wakeups",
    "AsyncStreams": "Streams",
    "AsyncScan": "Scan",
    "_ascripts": "_scripts",
    "_awakeups": "_wakeups",
    "_astreams": "_streams",
    "_ascan": "_scan",
    "_aeval": "_eval",
    "_apush_backlog": "_push_backlog",
    "AsyncLockOps": "SyncLockOps",
    "AsyncStampede": "SyncStampede",
    "AsyncRedisCoordinator": "RedisCoordinator",
    "AsyncFlights": "Flights",
    "_aflights": "_flights",
    "_arefreshing": "_refreshing",
    "aresult": "result",
    "_asleep": "_sleep",
    "_arefresh_pool": "_refresh_pool",
    "AsyncLeaseOps": "SyncLeaseOps",
    "_aguarded_set": "_guarded_set",
    "_aguarded_set_tagged": "_guarded_set_tagged",
    "aundo": "undo",
    "aguarded_set": "guarded_set",
    "_arevoke": "_revoke",
    "_arevoke_now": "_revoke_now",
    "arevoke": "revoke",
    "_alost_write": "_lost_write",
    "_awrite_over": "_write_over",
    "_areplay_pending": "_replay_pending",
    "_ainvalidate_tags_now": "_invalidate_tags_now",
    "_alookup_meta": "_lookup_meta",
    "_acounter_marks": "_counter_marks",
    "_amark_counters": "_mark_counters",
    "_aunmark": "_unmark",
    "_asingle_flight": "_single_flight",
    "_alead": "_lead",
    "_ahold": "_hold",
    "_afinish": "_finish",
    "_astore_and_finish": "_store_and_finish",
    "_astore_tagged": "_store_tagged",
    "_atimed": "_timed",
    "_acompute_and_store": "_compute_and_store",
    "_arefresh": "_refresh",
    "_astampede": "_stampede",
    "abegin": "begin",
    "afinish": "finish",
    "await_done": "wait_done",
    "aacquire": "acquire",
    "arelease": "release",
    "aextend": "extend",
    "alocked": "locked",
    "aowned": "owned",
    "__aenter__": "__enter__",
    "__aexit__": "__exit__",
    # the HTTP driver (http_driver.py)
    "AsyncHttpCache": "SyncHttpCache",
    "ADecided": "Decided",
    "AHitHandler": "HitHandler",
    "AForwarder": "Forwarder",
    "_aignore": "_ignore",
    "_aget": "_get",
    "alookup": "lookup",
    "aprobe": "probe",
    "astore": "store",
    "arun": "run",
    "_alock": "_lock",
    "_arelease": "_release",
    "ainvalidate_url": "invalidate_url",
    "ainvalidate_path": "invalidate_path",
    "asettle": "settle",
    "ainvalidate_unsafe": "invalidate_unsafe",
    # Django's cache_page (integrations/django/_page_async.py)
    "make_async_page": "make_sync_page",
    "make_async_fallback": "make_sync_fallback",
    "_asettle": "_settle",
    "_adeferred_settle": "_deferred_settle",
    "This file is the source: ``integrations/django/_page_sync.py``": (
        "GENERATED from ``integrations/django/_page_async.py``"
    ),
    "async views": "sync views",
    "This file is the source: ``cachekit/_sync/": "GENERATED from ``cachekit/_async/",
    "is generated from it by": "by",
    "(CI fails when they drift). Edit here, then run the script.": (
        "-- do not edit; edit the async source and run the script."
    ),
    "redis-py's asyncio client": "redis-py's client",
    "async callers": "sync callers",
    # rate limiting (cachekit/ratelimit/_async_limiter.py; see PAIRS)
    "AsyncRateLimiterOps": "RateLimiterOps",
    "ahit": "hit",
    "apeek": "peek",
    "areset": "reset",
    "_adecide": "_decide",
    "This file is the source: ``cachekit/ratelimit/_sync_limiter.py``": (
        "GENERATED from ``cachekit/ratelimit/_async_limiter.py``"
    ),
    # the near cache (cachekit/near/_async_backend.py; see PAIRS)
    "AsyncNearBackend": "NearBackend",
    "AsyncNearScripts": "NearScripts",
    "This file is the source: ``cachekit/near/_sync_backend.py``": (
        "GENERATED from ``cachekit/near/_async_backend.py``"
    ),
}

_PATTERN = re.compile(
    "|".join(
        (re.escape(k) if not k[0].isalnum() or " " in k else rf"\b{re.escape(k)}\b")
        for k in sorted(SUBS, key=len, reverse=True)
    )
)


def unasync(text: str, used: set[str]) -> str:
    def replace(match: re.Match[str]) -> str:
        used.add(match.group(0))
        return SUBS[match.group(0)]

    return _PATTERN.sub(replace, text)


def main(check: bool) -> int:
    used: set[str] = set()
    stale: list[str] = []
    pairs = [(source, TARGET / source.name) for source in sorted(SOURCE.glob("*.py"))]
    for source, target in pairs + PAIRS:
        generated = unasync(source.read_text(), used)
        if check:
            if not target.exists() or target.read_text() != generated:
                stale.append(str(target.relative_to(ROOT)))
        else:
            target.write_text(generated)
    unused = sorted(set(SUBS) - used)
    for name in stale:
        print(f"stale: {name} (run python scripts/unasync.py)")
    for sub in unused:
        print(f"unused substitution: {sub!r}")
    return 1 if (stale or unused) else 0


if __name__ == "__main__":
    sys.exit(main("--check" in sys.argv[1:]))
