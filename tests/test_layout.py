"""The redesign's proofs (issue "feature objects, not mixins"), runnable by anyone: each
test fails the day the layout regresses.

- no feature asks which backend it runs on: the issue's own grep finds nothing outside
  the backends' modules (they may name themselves);
- nor whether it is in process: that is read where a cache wires its features (the
  leases of :mod:`cachekit.leases.stores` included);
- ``Cache`` holds its write strategies as a feature object, not a mixin base;
- ``scripts/unasync.py``'s rule list fits on one screen;
- the in-process write-behind queue's async names are made from its sync methods (one
  definition), not written twice.
"""

from __future__ import annotations

import importlib.util
import inspect
import re
from pathlib import Path
from types import ModuleType

import pytest

from cachekit import Cache
from cachekit.kv._async_ops import AsyncCacheOps
from cachekit.kv._sync_ops import CacheOps
from cachekit.write.behind import MemoryWriteQueue
from cachekit.write.strategies import WriteStrategies

ROOT = Path(__file__).resolve().parent.parent

# the proof, as it is written there:
#   grep -rn "clients.get()\|isinstance(.*Memory\|== \"memory\"" cachekit integrations
BACKEND_TEST = re.compile(r'clients.get\(\)|isinstance\(.*Memory|== "memory"')
BACKENDS = ROOT / "cachekit" / "backends"  # a backend's own modules may name themselves


def backend_tests(root: Path, trees: tuple[str, ...] = ("cachekit", "integrations")) -> list[str]:
    found = []
    for tree in trees:
        for path in sorted((root / tree).rglob("*")):
            if not path.is_file() or path.suffix not in (".py", ".pyi") or BACKENDS in path.parents:
                continue
            for number, line in enumerate(path.read_text().splitlines(), 1):
                if BACKEND_TEST.search(line):
                    found.append(f"{path.relative_to(root)}:{number}: {line.strip()}")
    return found


def test_no_feature_tests_the_backend_it_runs_on() -> None:
    assert backend_tests(ROOT) == []


# whether the backend is in process (its declared ``local``) is read where a cache is made
# and wires its features (the codec, the generation, the leases), never by a feature
IN_PROCESS_TEST = re.compile(r"_is_local|caps\.local\b|\bbackend\.local\b")
WIRING = {"cachekit/_cache.py", "cachekit/leases/stores.py"}


def test_no_feature_asks_whether_its_store_is_in_process() -> None:
    found = {
        str(path.relative_to(ROOT))
        for tree in ("cachekit", "integrations")
        for path in (ROOT / tree).rglob("*.py")
        if BACKENDS not in path.parents and IN_PROCESS_TEST.search(path.read_text())
    }
    assert found <= WIRING, sorted(found - WIRING)


def test_the_backend_test_finder_finds_one(tmp_path: Path) -> None:
    """The proof's own check: each of the three spellings is found in a feature module."""
    (tmp_path / "cachekit").mkdir()
    (tmp_path / "cachekit" / "feature.py").write_text(
        "client = backend.clients.get()\n"
        "if isinstance(backend, MemoryBackend): pass\n"
        'if scheme == "memory": pass\n'
        "fine = backend.capabilities()\n"
    )
    assert [hit.split(":")[1] for hit in backend_tests(tmp_path)] == ["1", "2", "3"]


def test_cache_holds_its_write_strategies_as_a_feature_object() -> None:
    assert Cache.__bases__ == (CacheOps, AsyncCacheOps)
    assert not issubclass(Cache, WriteStrategies)
    with Cache() as cache:
        assert isinstance(cache._writes, WriteStrategies) and cache._writes._cache is cache
        # the public methods are the cache's own, forwarding to it
        for name in ("updates", "invalidates", "write_through", "write_behind"):
            assert name in vars(Cache), name


@pytest.fixture(scope="module")
def unasync() -> ModuleType:
    spec = importlib.util.spec_from_file_location("unasync_layout", ROOT / "scripts/unasync.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


SCREEN = 40  # lines: what "fits on one screen" means here


def test_the_unasync_rule_list_fits_on_one_screen(unasync: ModuleType) -> None:
    """The rules are generic (naming conventions); a new async module needs no row. The
    rule table, the renamed classes and the kept names together stay a screen long."""
    table = unasync.rules(unasync.harvest())
    assert len(table) <= 10, [pattern for pattern, _ in table]
    assert len(unasync.RENAMED) + len(unasync.KEEP) <= 6
    assert len(inspect.getsource(unasync.rules).splitlines()) <= SCREEN


def test_the_memory_queue_async_names_are_its_sync_methods() -> None:
    """``MemoryWriteQueue`` awaits nothing: each ``a<name>`` is made from ``<name>`` (one
    definition), so the two cannot drift apart (they were two hand-kept lists)."""
    twins = [name for name in vars(MemoryWriteQueue) if f"a{name}" in vars(MemoryWriteQueue)]
    assert sorted(twins) == sorted(
        ["push", "pull", "latest", "ack", "dead", "dead_letters", "take_dead", "maintain"]
    )
    for name in twins:
        async_twin = vars(MemoryWriteQueue)[f"a{name}"]
        assert inspect.iscoroutinefunction(async_twin)
        assert async_twin.__code__ is MemoryWriteQueue.apush.__code__  # one generic body
