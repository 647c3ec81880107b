#!/usr/bin/env python
"""What a Redis outage costs a cached function: cachekit against its peers.

    python benchmarks/bench_outage.py                   # every peer, killed and frozen
    python benchmarks/bench_outage.py --only cachekit-sync,cachekit-async --modes freeze

For each peer and each outage mode, in a process of its own with a redis-server of its
own: a cached function that returns a small dict is called until it is a hit; then Redis
is killed (SIGKILL: connections refused) or frozen (SIGSTOP: connections hang). The first
call after that is timed on its own; then up to ``--calls`` more calls are timed (p50, p99,
max), with whether any raised instead of returning the function's real value, and how many
log records (and tracebacks) the outage produced. A peer is cut short after
``--slow-calls`` calls slower than 0.1 s, or ``--budget`` seconds; a call that does not
return for ``--hang`` seconds ends the peer's process (reported as "hung").
Then Redis comes back (restarted empty on the same port, or thawed) and the time until
the function is served from the cache again is measured (the function is called every
millisecond; after a restart the first call must miss and store, the next one hits).

Every peer runs with its defaults (timeouts, retries, error handling), as a user gets it;
"django-redis (ignore)" is django-redis with its documented ``IGNORE_EXCEPTIONS`` option.
The target for cachekit: after the first timeout, every call returns its real
value with < 1 ms added (p99), one log line per outage, hits again within 0.5 s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import select
import signal
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _util import VALUE, RedisProcess, default_cpu, machine_line, percentile, pin

TTL = 300
TITLES = {
    "kill": "Redis killed (connections refused)",
    "freeze": "Redis frozen (SIGSTOP: connections hang)",
}
HEADER = (
    "| peer | first call | calls timed | p50 | p99 | max | raised | log records "
    "| hits again after |"
)
SLOW = 0.1  # seconds: a call slower than this counts towards --slow-calls

SYNC_PEERS = (
    "cachekit-sync",
    "dogpile.cache",
    "flask-caching",
    "django-redis",
    "django-redis-ignore",
)
ASYNC_PEERS = ("cachekit-async", "aiocache", "cashews")
PEERS = SYNC_PEERS + ASYNC_PEERS
LABELS = {
    "cachekit-sync": "cachekit (sync)",
    "cachekit-async": "cachekit (async)",
    "dogpile.cache": "dogpile.cache (redis)",
    "flask-caching": "Flask-Caching (RedisCache)",
    "django-redis": "django-redis",
    "django-redis-ignore": "django-redis (IGNORE_EXCEPTIONS)",
    "aiocache": "aiocache (RedisCache)",
    "cashews": "cashews (redis://)",
}


class Probe:
    """Counts how often the real function ran (a call that does not run it is a hit)."""

    def __init__(self) -> None:
        self.runs = 0

    def value(self) -> dict[str, Any]:
        self.runs += 1
        return dict(VALUE)


# -- the peers: each returns a zero-argument callable (sync, or returning an awaitable) -------
def make_peer(name: str, server: RedisProcess, probe: Probe) -> Callable[[], Any]:
    url, port = server.url, server.port
    if name == "cachekit-sync":
        from cachekit import Cache

        @Cache(url).cached(ttl=TTL)
        def ck(user_id: int) -> dict[str, Any]:
            return probe.value()

        return lambda: ck(42)
    if name == "cachekit-async":
        from cachekit import Cache

        @Cache(url).cached(ttl=TTL)
        async def ack(user_id: int) -> dict[str, Any]:
            return probe.value()

        return lambda: ack(42)
    if name == "dogpile.cache":
        from dogpile.cache import make_region

        region = make_region().configure(
            "dogpile.cache.redis", expiration_time=TTL, arguments={"url": url}
        )

        @region.cache_on_arguments()
        def dp(user_id: int) -> dict[str, Any]:
            return probe.value()

        return lambda: dp(42)
    if name == "flask-caching":
        from flask import Flask
        from flask_caching import Cache as FlaskCache

        app = Flask("outage")
        fcache = FlaskCache(app, config={"CACHE_TYPE": "RedisCache", "CACHE_REDIS_URL": url})

        @fcache.memoize(timeout=TTL)
        def fl(user_id: int) -> dict[str, Any]:
            return probe.value()

        return lambda: fl(42)
    if name.startswith("django-redis"):
        import django
        from django.conf import settings

        options: dict[str, Any] = {}
        if name == "django-redis-ignore":
            options["IGNORE_EXCEPTIONS"] = True
        settings.configure(
            CACHES={
                "default": {
                    "BACKEND": "django_redis.cache.RedisCache",
                    "LOCATION": url,
                    "OPTIONS": options,
                }
            }
        )
        django.setup()
        from django.core.cache import cache

        return lambda: cache.get_or_set("user:42", probe.value, TTL)
    if name == "aiocache":
        from aiocache import RedisCache, cached

        @cached(ttl=TTL, cache=RedisCache, endpoint="127.0.0.1", port=port)
        async def aio(user_id: int) -> dict[str, Any]:
            return probe.value()

        return lambda: aio(42)
    if name == "cashews":
        from cashews import Cache as CashewsCache

        cw_cache = CashewsCache()
        cw_cache.setup(url)

        @cw_cache(ttl=TTL)
        async def cw(user_id: int) -> dict[str, Any]:
            return probe.value()

        return lambda: cw(42)
    raise SystemExit(f"unknown peer {name!r}")


# -- the child: one peer, one mode ------------------------------------------------------------
class LogCounter(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records = 0
        self.tracebacks = 0
        self.first: str | None = None

    def emit(self, record: logging.LogRecord) -> None:
        self.records += 1
        if record.exc_info:
            self.tracebacks += 1
        if self.first is None:
            self.first = f"{record.name}: {record.getMessage()}"[:160]


def emit(**event: Any) -> None:
    print(json.dumps(event), flush=True)


async def child(name: str, mode: str, calls: int, budget: float, slow_calls: int) -> None:
    server = RedisProcess()
    probe = Probe()
    call = make_peer(name, server, probe)
    is_async = name in ASYNC_PEERS

    async def once() -> tuple[float, bool, bool]:
        """(seconds, raised, returned the real value) for one call."""
        start = time.perf_counter()
        try:
            result = await call() if is_async else call()
        except Exception:
            return time.perf_counter() - start, True, False
        return time.perf_counter() - start, False, result == VALUE

    for _ in range(3):  # fill the cache, then check it hits
        await once()
    before = probe.runs
    await once()
    emit(event="warm", hit=probe.runs == before)

    counter = LogCounter()
    logging.getLogger().addHandler(counter)
    if mode == "kill":
        server.kill()
    else:
        server.freeze()
    seconds, raised, ok = await once()
    emit(event="first", seconds=seconds, raised=raised, ok=ok)
    slow = 0
    started = time.monotonic()
    for _ in range(calls):
        seconds, raised, ok = await once()
        emit(event="call", seconds=seconds, raised=raised, ok=ok)
        slow += seconds > SLOW
        if slow >= slow_calls or time.monotonic() - started > budget:
            emit(event="cut", reason=f"{slow} slow calls" if slow >= slow_calls else "budget")
            break
    emit(event="logs", records=counter.records, tracebacks=counter.tracebacks, first=counter.first)

    # Redis answers again: how long until the function is served from the cache?
    if mode == "kill":
        server.start()  # same port, empty: one miss to store, then hits
    else:
        server.thaw()
    back = time.monotonic()
    deadline = back + 10.0
    hit_at = None
    while time.monotonic() < deadline:
        runs = probe.runs
        call_start = time.monotonic()
        await once()
        if probe.runs == runs:
            hit_at = call_start - back
            break
        await asyncio.sleep(0.001) if is_async else time.sleep(0.001)
    emit(event="recovered", seconds=hit_at)
    time.sleep(0.05)  # let a background "back again" log line land before counting
    emit(event="logs_total", records=counter.records, tracebacks=counter.tracebacks)
    server.stop()
    os._exit(0)  # skip peers' atexit/finalisers that may wait on connections


# -- the parent --------------------------------------------------------------------------------
def run_child(name: str, mode: str, args: argparse.Namespace) -> dict[str, Any]:
    cmd = [
        sys.executable, os.path.abspath(__file__), "--child", name, "--mode-child", mode,
        "--calls", str(args.calls), "--budget", str(args.budget),
        "--slow-calls", str(args.slow_calls), "--cpu", "-1",
    ]  # fmt: skip
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, start_new_session=True, text=True
    )
    assert proc.stdout is not None
    events: list[dict[str, Any]] = []
    hung = None
    last = time.monotonic()
    buffer = ""
    while True:
        ready, _, _ = select.select([proc.stdout], [], [], 0.5)
        if ready:
            chunk = os.read(proc.stdout.fileno(), 65536).decode()
            if not chunk:
                break
            buffer += chunk
            *lines, buffer = buffer.split("\n")
            for line in lines:
                if line.startswith("{"):
                    events.append(json.loads(line))
            last = time.monotonic()
        elif time.monotonic() - last > args.hang:
            hung = time.monotonic() - last
            break
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)  # the child and the redis-server it started
    proc.wait()
    return summarise(events, hung)


def summarise(events: list[dict[str, Any]], hung: float | None) -> dict[str, Any]:
    out: dict[str, Any] = {"hung": hung}
    durations, raised, wrong = [], 0, 0
    for e in events:
        kind = e["event"]
        if kind == "warm":
            out["warm_hit"] = e["hit"]
        elif kind == "first":
            out["first"] = e
        elif kind == "call":
            durations.append(e["seconds"])
            raised += e["raised"]
            wrong += not e["raised"] and not e["ok"]
        elif kind in ("cut", "logs", "recovered", "logs_total"):
            out[kind] = e
    out.update(durations=durations, raised=raised, wrong=wrong)
    return out


def ms(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds >= 1:
        return f"{seconds:.2f} s"
    if seconds >= 0.01:
        return f"{seconds * 1000:.0f} ms"
    if seconds >= 0.001:
        return f"{seconds * 1000:.1f} ms"
    return f"{seconds * 1e6:.0f} µs"


def row(name: str, r: dict[str, Any], hang: float) -> str:
    label = LABELS[name]
    if name.startswith("cachekit"):
        label = f"**{label}**"
    first = r.get("first")
    d = r["durations"]
    if first is None:
        first_txt = f"hung (> {hang:.0f} s)" if r["hung"] else "-"
    else:
        first_txt = ms(first["seconds"]) + (" raised" if first["raised"] else "")
    if d:
        p50, p99, worst = ms(percentile(d, 50)), ms(percentile(d, 99)), ms(max(d))
        calls = f"{len(d)}"
        if "cut" in r:
            calls += f" (cut: {r['cut']['reason']})"
    else:
        p50 = p99 = worst = "-"
        calls = "0"
    if r["hung"] and first is not None:
        calls += f"; then a call hung > {hang:.0f} s"
        worst = f"> {hang:.0f} s"
    if d and "cut" in r:
        p50 = f">{p50}" if percentile(d, 50) > SLOW else p50
    raised = f"{r['raised']}/{len(d)}" if d else ("yes" if first and first["raised"] else "-")
    logs = r.get("logs_total") or r.get("logs")
    log_txt = f"{logs['records']} ({logs['tracebacks']} tb)" if logs else "-"
    rec = r.get("recovered")
    rec_txt = "-" if not rec else (ms(rec["seconds"]) if rec["seconds"] is not None else "> 10 s")
    cells = (label, first_txt, calls, p50, p99, worst, raised, log_txt, rec_txt)
    return "| " + " | ".join(cells) + " |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default=",".join(PEERS), help="comma-separated peers")
    parser.add_argument("--modes", default="kill,freeze")
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--budget", type=float, default=15.0, help="seconds of calls per peer")
    parser.add_argument("--slow-calls", type=int, default=5, help="cut after N calls > 0.1 s")
    parser.add_argument("--hang", type=float, default=15.0, help="silent this long: hung")
    parser.add_argument("--cpu", type=int, default=default_cpu(), help="CPU to pin to (-1: none)")
    parser.add_argument("--json", help="also write the raw results to this file")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--mode-child", help=argparse.SUPPRESS)
    args = parser.parse_args()

    warnings.simplefilter("ignore")
    if args.child:
        logging.basicConfig(level=logging.CRITICAL + 1)  # count records, print none
        logging.getLogger().setLevel(logging.WARNING)
        asyncio.run(child(args.child, args.mode_child, args.calls, args.budget, args.slow_calls))
        return

    pinned = pin(args.cpu)
    peers = [p.strip() for p in args.only.split(",") if p.strip()]
    unknown = set(peers) - set(PEERS)
    if unknown:
        parser.error(f"unknown peer(s): {', '.join(sorted(unknown))}")
    modes = [m.strip() for m in args.modes.split(",")]
    print(f"<!-- {machine_line()}; {pinned}; up to {args.calls} calls per peer -->\n")
    raw: dict[str, Any] = {}
    for mode in modes:
        title = TITLES[mode]
        print(f"### {title}\n")
        print(HEADER)
        print("|---|---:|---|---:|---:|---:|---:|---:|---:|", flush=True)
        for name in peers:
            result = run_child(name, mode, args)
            raw[f"{mode}/{name}"] = {k: v for k, v in result.items() if k != "durations"}
            print(row(name, result, args.hang), flush=True)
        print(
            "\nTimes are per call of a function returning a small dict (the function itself "
            'costs ~1 µs). "raised": calls that raised instead of returning the real value. '
            '"hits again after": from Redis answering again to the first call served from '
            "the cache.\n",
            flush=True,
        )
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(raw, fh, indent=1, default=str)


if __name__ == "__main__":
    main()
