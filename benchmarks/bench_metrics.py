#!/usr/bin/env python
"""What metrics cost: the same hit with ``metrics=`` off (the floor) and on.

    python benchmarks/bench_metrics.py            # pinned to CPU 1 (like taskset -c 1)
    python benchmarks/bench_metrics.py --quick

Sections (each a markdown table; "vs floor" is the paired median ratio to metrics off):

1. memory hit, sync: ``@cache.cached``, then ``cache.get``, each with no metrics, with
   ``metrics=PrometheusExporter(registry)`` and with an OpenTelemetry SDK meter. The
   target: on <= 1.3x off (exporters read the counters at scrape time; a memory hit runs
   no metrics code).
2. Redis hit, sync (``cache.get``): off, Prometheus, OpenTelemetry: the one duration
   event per backend call, over a localhost round trip.
3. A scrape: ``generate_latest`` of a registry watching 10 caches (what a scrape costs).

The script starts its own redis-server on a free port and pins itself and that server to
one CPU (``--cpu``, default 1). Same run, interleaved rounds, as bench_hit_path.py.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import uuid
import warnings
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _util import (
    VALUE,
    Contender,
    RedisProcess,
    default_cpu,
    machine_line,
    measure,
    pin,
    sync_loop,
    table,
    write_results,
)

from cachekit import Cache


def _prefix() -> str:
    return f"bm{uuid.uuid4().hex[:8]}"


def _exporters() -> dict[str, Any]:
    from prometheus_client import CollectorRegistry

    from cachekit.metrics.prometheus import PrometheusExporter

    made: dict[str, Any] = {"off": None, "prometheus": PrometheusExporter(CollectorRegistry())}
    try:
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    except ModuleNotFoundError:  # the otel row needs opentelemetry-sdk
        return made
    provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
    made["otel"] = provider.get_meter("bench")
    return made


def memory_section(kind: str) -> list[Contender]:
    """``kind``: "cached" (a decorated function's hit) or "get" (``cache.get``)."""
    contenders = []
    for label, metrics in _exporters().items():
        cache = Cache(prefix=_prefix(), metrics=metrics)

        @cache.cached(ttl=300)
        def get_user(user_id: int) -> dict[str, Any]:
            return VALUE

        get_user(1)
        cache.set("k", VALUE)
        run = sync_loop(get_user, 1) if kind == "cached" else sync_loop(cache.get, "k")
        name = "@cached" if kind == "cached" else "get"
        contenders.append(Contender(f"cachekit {name}, metrics {label}", run, floor=label == "off"))
    return contenders


def redis_section(server: RedisProcess) -> list[Contender]:
    contenders = []
    for label, metrics in _exporters().items():
        cache = Cache(server.url, prefix=_prefix(), metrics=metrics)
        cache.set("k", VALUE, ttl=600)
        contenders.append(
            Contender(f"cachekit get, metrics {label}", sync_loop(cache.get, "k"),
                      floor=label == "off")
        )  # fmt: skip
    return contenders


def scrape_section() -> list[Contender]:
    from prometheus_client import CollectorRegistry, generate_latest

    from cachekit.metrics.prometheus import PrometheusExporter

    exporter = PrometheusExporter(CollectorRegistry())
    caches = [Cache(prefix=f"c{i}", metrics=exporter) for i in range(10)]
    for cache in caches:
        cache.get("x")
    empty = CollectorRegistry()
    return [
        Contender("generate_latest, empty registry", sync_loop(generate_latest, empty), floor=True),
        Contender("cachekit: 10 caches", sync_loop(generate_latest, exporter.registry)),
    ]


def _target(contenders: list[Contender], limit: float) -> str:
    floor = next(c for c in contenders if c.floor)
    worst = max(c.ratio(floor) for c in contenders if not c.floor)
    verdict = "met" if worst <= limit else "NOT met"
    return f"Target: metrics on <= {limit}x off: worst {worst:.2f}x ({verdict})."


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cpu", type=int, default=default_cpu())
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--target", type=float, default=0.2)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", help="write the tables as JSON to this file")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.target = 3, 0.05
    logging.basicConfig(level=logging.ERROR)
    warnings.simplefilter("ignore")
    print(f"# metrics benchmark ({pin(args.cpu)}; {machine_line()})\n")
    for kind in ("cached", "get"):
        memory = memory_section(kind)
        measure(memory, args.rounds, args.target)
        title = f"Memory hit, sync, {'@cache.cached' if kind == 'cached' else 'cache.get'}"
        print(table(title, memory, _target(memory, 1.3)), "\n")
    with RedisProcess() as server:
        remote = redis_section(server)
        measure(remote, args.rounds, args.target)
        print(table("Redis hit, sync: metrics off vs on", remote), "\n")
    scrape = scrape_section()
    measure(scrape, args.rounds, args.target)
    print(table("A Prometheus scrape", scrape), "\n")
    if args.json:
        write_results(args.json, {"benchmark": "metrics", "rounds": args.rounds})


if __name__ == "__main__":
    main()
