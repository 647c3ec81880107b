#!/usr/bin/env python
"""Django cache backends side by side: cachekit's CachekitCache, Django's built-in
RedisCache and django-redis, on the same redis-server, in one run.

    python benchmarks/bench_django.py             # pinned to CPU 1 with its redis-server
    python benchmarks/bench_django.py --quick     # fewer, shorter rounds

Each backend is configured as a Django project would (``CACHES``, defaults: pickle for the
peers, signed pickle for cachekit) and timed through ``django.core.cache.caches[alias]``:

  get        a hit on a small dict
  get miss   a key that is not there
  set        a small dict, default timeout
  get_many   10 keys, all hits
  set_many   10 keys, default timeout
  aget       the async API (native on cachekit; sync_to_async on the peers)

The script pins itself to one CPU (``--cpu``, default 1, like ``taskset -c 1``) and starts
its redis-server from there, so client and server share that CPU. Every contender is
warmed up and calibrated, then ``--rounds`` rounds interleave them; the table shows the
median ops/s and cachekit's ratio to each peer (above 1.00x: cachekit is faster).
Target: not slower than either peer.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _util import (
    VALUE,
    Contender,
    RedisProcess,
    ameasure,
    async_loop,
    default_cpu,
    machine_line,
    measure,
    pin,
    sync_loop,
)

BACKENDS = {
    "cachekit": "cachekit.integrations.django.CachekitCache",
    "django builtin": "django.core.cache.backends.redis.RedisCache",
    "django-redis": "django_redis.cache.RedisCache",
}
MANY = 10


def configure(url: str) -> Any:
    import django
    from django.conf import settings

    settings.configure(
        SECRET_KEY="bench-django",
        CACHES={
            name: {"BACKEND": backend, "LOCATION": url, "KEY_PREFIX": f"bench{i}", "TIMEOUT": 300}
            for i, (name, backend) in enumerate(BACKENDS.items())
        },
    )
    django.setup()
    from django.core.cache import caches

    return caches


def operations(cache: Any) -> dict[str, Any]:
    keys = [f"many:{i}" for i in range(MANY)]
    mapping = dict.fromkeys(keys, VALUE)
    cache.set("hit", VALUE)
    cache.set_many(mapping)
    assert cache.get("hit") == VALUE and len(cache.get_many(keys)) == MANY
    return {
        "get": sync_loop(cache.get, "hit"),
        "get miss": sync_loop(cache.get, "missing"),
        "set": sync_loop(cache.set, "written", VALUE),
        "get_many": sync_loop(cache.get_many, keys),
        "set_many": sync_loop(cache.set_many, mapping),
    }


def render(title: str, results: dict[str, Contender]) -> str:
    ours = results["cachekit"]
    peers = [name for name in results if name != "cachekit"]
    head = "| backend | ops/s (median) | spread | " + " | ".join(f"cachekit vs {p}" for p in peers)
    lines = [f"### {title}", "", head + " |", "|---|---:|---:|" + "---:|" * len(peers)]
    for name, c in results.items():
        ratios = " | ".join(
            f"{results[p].median / ours.median:.2f}x" if name == "cachekit" else "" for p in peers
        )
        label = f"**{name}**" if name == "cachekit" else name
        spread = f"{1e9 / max(c.samples):,.0f}-{1e9 / min(c.samples):,.0f}"
        lines.append(f"| {label} | {1e9 / c.median:,.0f} | {spread} | {ratios} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cpu", type=int, default=default_cpu())
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--target", type=float, default=0.4, help="seconds per round")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", help="comma-separated operations, e.g. get,get_many,aget")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.target = 3, 0.15

    pinned = pin(args.cpu)
    with RedisProcess() as server:
        caches = configure(server.url)
        names = list(BACKENDS)
        per_op: dict[str, dict[str, Contender]] = {}
        runs = {name: operations(caches[name]) for name in names}
        wanted = set(args.only.split(",")) if args.only else None
        for op in runs["cachekit"]:
            if wanted is not None and op not in wanted:
                continue
            contenders = [Contender(name, runs[name][op]) for name in names]
            measure(contenders, args.rounds, args.target)
            per_op[op] = {c.name: c for c in contenders}

        async def async_part() -> dict[str, Contender]:
            contenders = [Contender(name, async_loop(caches[name].aget, "hit")) for name in names]
            await ameasure(contenders, args.rounds, args.target)
            await caches["cachekit"].cachekit.aclose()
            return {c.name: c for c in contenders}

        if wanted is None or "aget" in wanted:
            per_op["aget"] = asyncio.run(async_part())
        from cachekit.integrations.django import close_shared_caches

        close_shared_caches()

    print(f"## Django cache backends on one redis-server ({pinned}; {machine_line()})\n")
    print(
        f"{args.rounds} interleaved rounds of ~{args.target} s per contender; "
        "ratio = peer's time per op / cachekit's (above 1.00x: cachekit is faster).\n"
    )
    for op, results in per_op.items():
        print(render(op, results) + "\n")
    slower = [
        f"{op} vs {peer}"
        for op, results in per_op.items()
        for peer in results
        if peer != "cachekit" and results["cachekit"].median > results[peer].median * 1.03
    ]
    print(
        "Target: not slower than either peer: "
        + ("met" if not slower else "MISSED on " + ", ".join(slower))
        + " (3% noise allowance)."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
