"""Shared helpers for the benchmarks: CPU pinning, a throwaway redis-server, timing, tables.

Nothing here is part of cachekit's API; the benchmark scripts import it as a sibling module.
"""

from __future__ import annotations

import gc
import itertools
import os
import socket
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cachekit.testing.servers import RedisServer, free_port  # noqa: F401 (re-exported)

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run from a checkout without installing: python benchmarks/x.py
    sys.path.insert(0, str(ROOT))

# A small, typical cached value: what a "get user" function returns.
VALUE: dict[str, Any] = {
    "id": 42,
    "name": "Ada Lovelace",
    "email": "ada@example.com",
    "roles": ["admin", "dev"],
    "active": True,
}


# -- pinning -------------------------------------------------------------------------------
def pin(cpu: int | None) -> str:
    """Pin this process (and every process it starts later, e.g. redis-server) to one CPU.

    Same effect as running under ``taskset -c CPU``: a cache hit on localhost Redis is a
    few tens of microseconds, and a wake-up of redis-server on the other core costs more
    than the GET itself on a noisy VM, so client and server share one CPU.
    """
    if cpu is None or cpu < 0 or not hasattr(os, "sched_setaffinity"):
        return "not pinned"
    available = sorted(os.sched_getaffinity(0))
    if cpu not in available:
        cpu = available[-1]
    os.sched_setaffinity(0, {cpu})
    return f"pinned to CPU {cpu} (like taskset -c {cpu})"


def default_cpu() -> int:
    return int(os.environ.get("BENCH_CPU", "1"))


# -- a throwaway redis-server ----------------------------------------------------------------
class RedisProcess(RedisServer):
    """A redis-server of our own on a free loopback port; never a server we did not start.

    :class:`cachekit.testing.servers.RedisServer` (``kill``, ``freeze``, ``thaw``,
    ``restart``) plus command counting. Started from this (pinned) process, so it inherits
    the CPU affinity.
    """

    def __init__(self, port: int | None = None) -> None:
        super().__init__(port, extra_args=("--loglevel", "warning"))

    def answers(self, timeout: float = 0.2) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def command_calls(self) -> dict[str, int]:
        """``INFO commandstats`` as {command: calls}."""
        import redis

        client = redis.Redis(host="127.0.0.1", port=self.port)
        try:
            info = client.info("commandstats")
        finally:
            client.close()
        return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in info.items()}

    def commands_since(self, before: dict[str, int]) -> int:
        """Commands the server ran since ``before`` (our own INFO/HELLO/CLIENT left out)."""
        after = self.command_calls()
        ours = ("info", "hello", "client")
        return sum(
            calls - before.get(name, 0)
            for name, calls in after.items()
            if not name.startswith(ours)
        )

    def __enter__(self) -> RedisProcess:
        return self


# -- timing ---------------------------------------------------------------------------------
SyncRun = Callable[[int], int]  # run(n) -> elapsed ns for n calls
AsyncRun = Callable[[int], Awaitable[int]]


@dataclass
class Contender:
    name: str
    run: Any  # SyncRun or AsyncRun
    note: str = ""
    floor: bool = False
    calls_per_run: int = 0
    samples: list[float] = field(default_factory=list)  # ns per call, one per round
    commands: float | None = None  # Redis commands per call

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    def ratio(self, floor: Contender) -> float:
        """The median over rounds of this contender's time over the floor's in that round:
        paired by round, so a noisy stretch of the machine moves both sides together."""
        return statistics.median(a / b for a, b in zip(self.samples, floor.samples))


def sync_loop(func: Callable[..., Any], *args: Any) -> SyncRun:
    """A ``run(n)`` that calls ``func(*args)`` n times; the loop is the cheapest Python has."""
    repeat, clock = itertools.repeat, time.perf_counter_ns

    def run(n: int) -> int:
        start = clock()
        for _ in repeat(None, n):
            func(*args)
        return clock() - start

    return run


def async_loop(func: Callable[..., Awaitable[Any]], *args: Any) -> AsyncRun:
    repeat, clock = itertools.repeat, time.perf_counter_ns

    async def run(n: int) -> int:
        start = clock()
        for _ in repeat(None, n):
            await func(*args)
        return clock() - start

    return run


def _timed_sync(run: SyncRun, n: int) -> int:
    gc.collect()
    gc.disable()  # as timeit does: a collection landing in one contender's round is noise
    try:
        return run(n)
    finally:
        gc.enable()


async def _timed_async(run: AsyncRun, n: int) -> int:
    gc.collect()
    gc.disable()
    try:
        return await run(n)
    finally:
        gc.enable()


def _calls_for(elapsed_ns: int, n: int, target_s: float) -> int:
    per_call = max(elapsed_ns / n, 1.0)
    return max(10, int(target_s * 1e9 / per_call))


def measure(contenders: Sequence[Contender], rounds: int, target_s: float) -> None:
    """Warm up and calibrate each contender, then run ``rounds`` interleaved rounds.

    Each round runs every contender once (starting with a different one each round, so
    none is always first after a context switch); ``samples`` gets ns/call per round.
    """
    for c in contenders:
        n = 10
        while True:  # warm-up doubles as calibration
            elapsed = _timed_sync(c.run, n)
            if elapsed > target_s * 1e9 / 10 or n >= 10_000_000:
                break
            n *= 4
        c.calls_per_run = _calls_for(elapsed, n, target_s)
    for r in range(rounds):
        order = list(contenders[r % len(contenders) :]) + list(contenders[: r % len(contenders)])
        for c in order:
            c.samples.append(_timed_sync(c.run, c.calls_per_run) / c.calls_per_run)


async def ameasure(contenders: Sequence[Contender], rounds: int, target_s: float) -> None:
    """:func:`measure` for async contenders, all on the running event loop."""
    for c in contenders:
        n = 10
        while True:
            elapsed = await _timed_async(c.run, n)
            if elapsed > target_s * 1e9 / 10 or n >= 10_000_000:
                break
            n *= 4
        c.calls_per_run = _calls_for(elapsed, n, target_s)
    for r in range(rounds):
        order = list(contenders[r % len(contenders) :]) + list(contenders[: r % len(contenders)])
        for c in order:
            c.samples.append(await _timed_async(c.run, c.calls_per_run) / c.calls_per_run)


# -- output ---------------------------------------------------------------------------------
def fmt_ns(ns: float) -> str:
    if ns >= 100_000:
        return f"{ns / 1000:,.0f} µs"
    if ns >= 10_000:
        return f"{ns / 1000:,.1f} µs"
    return f"{ns:,.0f} ns"


RESULTS: list[dict[str, Any]] = []
"""Every table printed, as data (a script's ``--json FILE`` writes them; chart.py draws them)."""


def record(title: str, contenders: Sequence[Contender]) -> dict[str, Any]:
    """One table's figures: per contender the median, spread and ratio to the floor."""
    floor = next(c for c in contenders if c.floor)
    return {
        "section": title,
        "contenders": [
            {
                "name": c.name, "floor": c.floor, "cachekit": c.name.startswith("cachekit"),
                "median_ns": c.median, "min_ns": min(c.samples), "max_ns": max(c.samples),
                "vs_floor": c.ratio(floor), "commands": c.commands, "samples": c.samples,
            }
            for c in contenders
        ],
    }  # fmt: skip


def write_results(path: str, meta: dict[str, Any]) -> None:
    """The tables printed so far, and how they were measured, as JSON in ``path``."""
    import json

    with open(path, "w") as f:
        json.dump({**meta, "sections": RESULTS}, f, indent=1)
        f.write("\n")


def table(
    title: str, contenders: Sequence[Contender], target: str = "", with_commands: bool = False
) -> str:
    RESULTS.append(record(title, contenders))
    floor = next(c for c in contenders if c.floor)
    head = "| contender | ns/op (median) | spread (min-max) | vs floor (paired median) |"
    rule = "|---|---:|---:|---:|"
    if with_commands:
        head += " Redis cmds/hit |"
        rule += "---:|"
    lines = [f"### {title}", "", head, rule]
    for c in contenders:
        name = f"{c.name} (floor)" if c.floor else c.name
        if c.note:
            name += f" — {c.note}"
        if c.name.startswith("cachekit"):
            name = f"**{name}**"
        row = (
            f"| {name} | {c.median:,.0f} | {min(c.samples):,.0f}-{max(c.samples):,.0f} "
            f"| {c.ratio(floor):.2f}x |"
        )
        if with_commands:
            row += f" {c.commands:g} |" if c.commands is not None else " - |"
        lines.append(row)
    if target:
        lines += ["", target]
    return "\n".join(lines)


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def machine_line() -> str:
    import platform

    return (
        f"Python {platform.python_version()} on {platform.machine()}, "
        f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}"
    )
