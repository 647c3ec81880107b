"""The stampede decisions: values and a clock in, a decision out (no backend, no loop)."""

from __future__ import annotations

import math
import threading
import time
from typing import Any

import pytest

from cachekit import ConfigurationError
from cachekit.stampede.rules import (
    Freshness,
    StampedeOptions,
    classify,
    companion_key,
    entry_meta,
    hash_tag,
    may_serve_on_error,
    physical_ttl,
    wait_slice,
    xfetch_refresh,
)

NOW = 1_000_000.0


def test_options_validation_and_defaults() -> None:
    opts = StampedeOptions.build(lock=True)
    assert opts.lock and not opts.uses_meta and opts.wait_timeout == opts.lock_ttl
    assert StampedeOptions.build(early_refresh=True).early_refresh == 1.0
    assert StampedeOptions.build(early_refresh=2.5).early_refresh == 2.5
    assert StampedeOptions.build(stale_if_error=True, ttl=30).stale_if_error == 30
    assert StampedeOptions.build(stale_if_error=True, stale_ttl=5, ttl=30).stale_if_error == 5
    assert not StampedeOptions.build().active
    for bad in ({"stale_ttl": -1}, {"early_refresh": -1.0}, {"lock_ttl": 0}, {"lock_timeout": -1}):
        with pytest.raises(ConfigurationError):
            StampedeOptions.build(**bad)  # type: ignore[arg-type]


def test_physical_ttl_keeps_the_longest_stale_window() -> None:
    opts = StampedeOptions.build(stale_ttl=10, stale_if_error=60)
    assert physical_ttl(30, opts) == 90
    assert physical_ttl(None, opts) is None


def test_classify_fresh_stale_expired() -> None:
    opts = StampedeOptions.build(stale_ttl=10)
    meta = entry_meta(NOW, 30, delta=0.5)
    assert classify(meta, NOW + 29, opts, rand=0.5) is Freshness.FRESH
    assert classify(meta, NOW + 30, opts, rand=0.5) is Freshness.STALE
    assert classify(meta, NOW + 39.9, opts, rand=0.5) is Freshness.STALE
    assert classify(meta, NOW + 40, opts, rand=0.5) is Freshness.EXPIRED
    assert classify(None, NOW, opts, rand=0.5) is Freshness.FRESH  # a plain entry
    assert classify(entry_meta(NOW, None, 1.0), NOW + 1e9, opts, 0.5) is Freshness.FRESH


def test_xfetch_probability_grows_as_expiry_nears_and_with_delta() -> None:
    def probability(left: float, delta: float, beta: float = 1.0) -> float:
        # P(now - delta*beta*ln(r) >= expiry) = P(r <= exp(-left/(delta*beta)))
        draws = [i / 1000 for i in range(1, 1001)]
        hits = sum(xfetch_refresh(NOW, NOW + left, delta, beta, r) for r in draws)
        return hits / len(draws)

    assert probability(10, 1) < probability(5, 1) < probability(1, 1) < probability(0.01, 1)
    assert math.isclose(probability(1, 1), math.exp(-1), abs_tol=0.01)
    assert probability(5, 0.1) < probability(5, 2.0)  # slower computations start earlier
    assert probability(5, 1, beta=0.5) < probability(5, 1, beta=2.0)
    assert xfetch_refresh(NOW, NOW, 0.0, 1.0, 0.0)  # at expiry: always


def test_classify_early_uses_the_draw() -> None:
    opts = StampedeOptions.build(early_refresh=True)
    meta = entry_meta(NOW, 10, delta=2.0)
    assert classify(meta, NOW + 9, opts, rand=0.99) is Freshness.FRESH
    assert classify(meta, NOW + 9, opts, rand=0.01) is Freshness.EARLY
    assert classify(meta, NOW + 1, opts, rand=0.1) is Freshness.FRESH  # far from expiry


def test_serve_on_error_window() -> None:
    opts = StampedeOptions.build(stale_if_error=60)
    meta = entry_meta(NOW, 30, 0.1)
    assert may_serve_on_error(meta, NOW + 89, opts)
    assert not may_serve_on_error(meta, NOW + 91, opts)
    assert not may_serve_on_error(meta, NOW, StampedeOptions.build())


def test_wait_slice_stays_under_the_socket_timeout() -> None:
    assert wait_slice(5.0, 0.25) == pytest.approx(0.15)
    assert wait_slice(0.05, 0.25) == 0.05
    assert wait_slice(5.0, None) == 1.0
    assert wait_slice(5.0, 10.0) == 1.0  # a patient client still re-checks the lock each second
    assert wait_slice(-1, 0.25) == 0.01


def crc16(data: bytes) -> int:  # Redis Cluster's key slot function (XMODEM CRC16)
    crc = 0
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
    return crc


def slot(key: str) -> int:
    tag = hash_tag(key)
    return crc16((key if tag is None else tag).encode()) % 16384


@pytest.mark.parametrize("user_key", ["user:42", "user:{42}:profile", "a{b", "x{}y"])
def test_companion_keys_share_the_entry_slot_and_namespace(user_key: str) -> None:
    ns = "shop:1:"
    entry = ns + user_key
    for kind in ("lock", "done:abc123"):
        companion = companion_key(ns, kind, entry)
        assert companion.startswith("#" + ns + kind + ":")  # internal: outside ns + "*"
        if user_key != "x{}y":  # braces without a tag: no key can name that slot
            assert slot(companion) == slot(entry), (companion, entry)
    assert companion_key(ns, "lock", entry) != companion_key(ns, "lock", ns + "user:43")


# -- pending invalidations, single-flight outcomes, the refresh pool (issue 8) -----------
def test_pending_invalidations_overflow_to_a_namespace_clear(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import cachekit.core.breaker as breaker

    monkeypatch.setattr(breaker, "MAX_PENDING_KEYS", 3)
    pending = breaker.Pending()
    assert not pending
    pending.add(["a", "b"], ["t"])
    assert pending and pending.keys == {"a", "b"} and pending.tags == {"t"}
    pending.add(["b", "c"], ())
    assert not pending.overflow and len(pending.keys) == 3
    pending.add(["d"], ())
    assert pending.overflow and not pending.keys and pending  # still something to do
    kept = breaker.Pending()
    kept.add(["x"], ())
    kept.merge(pending)
    assert kept.overflow and not kept.keys


def test_breaker_defers_only_while_open_and_replays_before_closing() -> None:
    from cachekit.core.breaker import CircuitBreaker

    replayed: list[set[str]] = []
    up = threading.Event()

    class Owner:
        def _replay_pending(self, pending: Any) -> None:
            replayed.append(set(pending.keys))

    def probe() -> None:
        if not up.is_set():
            raise ConnectionError("down")

    breaker = CircuitBreaker(probe, retry_interval=0.01)
    assert breaker.defer(["k"], (), Owner()) is False  # closed: deliver it yourself
    breaker.trip(ConnectionError("down"))
    assert breaker.defer(["k1", "k2"], (), Owner()) is True
    assert breaker.pending == 2 and breaker.open
    up.set()
    deadline = time.monotonic() + 5
    while breaker.open and time.monotonic() < deadline:
        time.sleep(0.01)  # the probe thread: nothing to wait on
    assert not breaker.open and replayed == [{"k1", "k2"}] and breaker.pending == 0
    breaker.close()


def test_a_flight_shares_the_functions_exception_but_never_an_interruption() -> None:
    from cachekit.core.concurrency import ABANDONED, Flight

    failed = Flight()
    failed.fail(ValueError("the function's answer"))
    with pytest.raises(ValueError):
        failed.result(0)
    interrupted = Flight()
    interrupted.fail(KeyboardInterrupt())
    assert interrupted.result(0) is ABANDONED


def test_refresh_pool_runs_on_a_few_threads_and_bounds_its_queue() -> None:
    from cachekit.core.concurrency import RefreshPool

    pool = RefreshPool(workers=2, limit=5)
    gate = threading.Event()
    ran: list[int] = []
    names: set[str] = set()

    def job(n: int) -> None:
        names.add(threading.current_thread().name + str(threading.get_ident()))
        gate.wait(5)
        ran.append(n)

    accepted = [pool.submit(job, n) for n in range(10)]
    # two running (or about to take a job), at most five waiting: the rest refused
    assert accepted.count(True) <= 7 and accepted[-1] is False
    gate.set()
    deadline = time.monotonic() + 5
    while len(ran) < accepted.count(True) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert sorted(ran) == [n for n, ok in enumerate(accepted) if ok]
    assert len(names) <= 2
