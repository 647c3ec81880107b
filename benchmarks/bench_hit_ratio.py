#!/usr/bin/env python
"""Hit ratio of the memory eviction policies on skewed traffic with scans, and their cost.

    python benchmarks/bench_hit_ratio.py            # full run, pinned to CPU 1
    python benchmarks/bench_hit_ratio.py --quick    # a shorter trace, fewer rounds

Contenders: cachekit ``Cache()`` (LRU, the default), cachekit
``Cache(eviction="tinylfu")`` (W-TinyLFU), cachetools ``LRUCache`` and theine ``Cache``
(W-TinyLFU, with a Rust core).

1. **Hit ratio.** A trace of ``--requests`` keys: Zipf(``--alpha``) popularity over
   ``--universe`` keys, with, after every ``--scan-every`` Zipf requests, a scan of
   ``--scan-length`` keys never seen before (a batch job or a crawler walking through).
   Every contender replays the same trace the way a read-through cache is used (get; on a
   miss, set) at each ``--sizes`` capacity, and the table shows hits / requests.
2. **Cost of a hit.** ns per ``get`` of a key that is cached, cycling over 1000 hot keys
   (so the policy's bookkeeping is exercised, not one key's), with the rounds interleaved
   as in ``bench_hit_path.py`` (median ns/op and the ratio to cachekit's LRU).
"""

from __future__ import annotations

import argparse
import bisect
import itertools
import os
import random
import sys
from collections.abc import Callable, Sequence
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import cachetools
import theine
from _util import Contender, default_cpu, fmt_ns, machine_line, measure, pin, sync_loop

from cachekit import Cache

Get = Callable[[str], Any]
Set = Callable[[str, Any], Any]
_MISS = object()


def zipf_scan_trace(
    *,
    requests: int,
    universe: int,
    alpha: float,
    scan_every: int,
    scan_length: int,
    seed: int,
) -> list[str]:
    """Zipf(alpha) keys over ``universe``, interrupted by scans of fresh keys."""
    rng = random.Random(seed)
    cumulative = list(itertools.accumulate(1.0 / (rank**alpha) for rank in range(1, universe + 1)))
    total = cumulative[-1]
    # rank r -> a key name that does not reveal the rank's order to the hash
    names = [f"item:{rng.getrandbits(48):012x}" for _ in range(universe)]
    trace: list[str] = []
    scanned = 0
    since_scan = 0
    while len(trace) < requests:
        trace.append(names[bisect.bisect_left(cumulative, rng.random() * total)])
        since_scan += 1
        if since_scan == scan_every:
            since_scan = 0
            for _ in range(scan_length):
                trace.append(f"scan:{scanned}")
                scanned += 1
    return trace[:requests]


# -- the contenders, each as (get, set) ------------------------------------------------------
def cachekit_pair(size: int, eviction: str) -> tuple[Get, Set]:
    cache = Cache(max_entries=size, eviction=eviction)
    get, set_ = cache.get, cache.set
    return (lambda key: get(key, _MISS)), set_


def cachetools_pair(size: int) -> tuple[Get, Set]:
    lru: cachetools.LRUCache[str, Any] = cachetools.LRUCache(maxsize=size)
    return (lambda key: lru.get(key, _MISS)), lru.__setitem__


def theine_pair(size: int) -> tuple[Get, Set]:
    cache: theine.Cache[str, Any] = theine.Cache(size)
    get = cache.get

    def lookup(key: str) -> Any:
        value, found = get(key)
        return value if found else _MISS

    return lookup, cache.set


CONTENDERS: dict[str, Callable[[int], tuple[Get, Set]]] = {
    "cachekit LRU (default)": lambda size: cachekit_pair(size, "lru"),
    "cachekit tinylfu": lambda size: cachekit_pair(size, "tinylfu"),
    "cachetools LRUCache": cachetools_pair,
    "theine (W-TinyLFU)": theine_pair,
}


def hit_ratio(pair: tuple[Get, Set], trace: Sequence[str]) -> float:
    get, set_ = pair
    hits = 0
    for key in trace:
        if get(key) is _MISS:
            set_(key, key)
        else:
            hits += 1
    return hits / len(trace)


def hit_cost_contenders(size: int) -> list[Contender]:
    hot = [f"hot:{i}" for i in range(1000)]
    contenders = []
    for name, make in CONTENDERS.items():
        get, set_ = make(size)
        for key in hot:
            set_(key, key)
        for key in hot:  # every hot key found before timing
            assert get(key) is not _MISS, name
        keys = itertools.cycle(hot)

        def one_hit(get: Get = get, keys: Any = keys) -> Any:
            return get(next(keys))

        floor = name.startswith("cachekit LRU")
        contenders.append(Contender(name, sync_loop(one_hit), floor=floor))
    for eviction in ("lru", "tinylfu"):  # the inlined @cached hit path
        cache = Cache(max_entries=size, eviction=eviction)

        @cache.cached
        def identity(x: int) -> int:
            return x

        numbers = itertools.cycle(range(1000))
        for number in range(1000):
            identity(number)

        def cached_hit(identity: Callable[[int], int] = identity, numbers: Any = numbers) -> Any:
            return identity(next(numbers))

        contenders.append(Contender(f"cachekit @cached {eviction}", sync_loop(cached_hit)))
    return contenders


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=400_000)
    parser.add_argument("--universe", type=int, default=100_000)
    parser.add_argument("--alpha", type=float, nargs="+", default=[0.9, 1.0])
    parser.add_argument("--scan-every", type=int, default=20_000)
    parser.add_argument("--scan-length", type=int, default=5_000)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1_000, 10_000])
    parser.add_argument("--rounds", type=int, default=11)
    parser.add_argument("--target", type=float, default=0.1)
    parser.add_argument("--cpu", type=int, default=default_cpu())
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    if args.quick:
        args.requests, args.rounds = 100_000, 3
    print(f"# Hit ratio: {pin(args.cpu)}; {machine_line()}")
    print(
        f"\nTrace: {args.requests:,} requests, Zipf over {args.universe:,} keys; after every "
        f"{args.scan_every:,} Zipf requests, a scan of {args.scan_length:,} fresh keys "
        f"({args.scan_length / (args.scan_every + args.scan_length):.0%} of the traffic). "
        "Read-through: get, and set on a miss."
    )
    for alpha in args.alpha:
        trace = zipf_scan_trace(
            requests=args.requests,
            universe=args.universe,
            alpha=alpha,
            scan_every=args.scan_every,
            scan_length=args.scan_length,
            seed=1,
        )
        print(f"\n### Hit ratio, Zipf({alpha}) + scans\n")
        print("| cache size | " + " | ".join(CONTENDERS) + " |")
        print("|---:|" + "---:|" * len(CONTENDERS))
        for size in args.sizes:
            ratios = [hit_ratio(make(size), trace) for make in CONTENDERS.values()]
            print(f"| {size:,} | " + " | ".join(f"{r:.1%}" for r in ratios) + " |")

    size = max(args.sizes)
    contenders = hit_cost_contenders(size)
    measure(contenders, args.rounds, args.target)
    floor = contenders[0]
    print(
        f"\n### Cost of a hit (`get` of a cached key, cycling over 1000 hot keys, size "
        f"{size:,}; `@cached`: a one-argument function over 1000 ints)\n"
    )
    print("| contender | ns/hit (median) | spread (min-max) | vs cachekit LRU |")
    print("|---|---:|---:|---:|")
    for c in contenders:
        print(
            f"| {c.name} | {fmt_ns(c.median)} | {min(c.samples):,.0f}-{max(c.samples):,.0f} "
            f"| {c.ratio(floor):.2f}x |"
        )


if __name__ == "__main__":
    main()
