"""cachekit's boundary: what ``import cachekit`` exports, and what it needs to import.

Public names live in private modules and are re-exported from ``cachekit/__init__.py``
(httpx ``tests/test_exported_members.py``); ``import cachekit`` needs only the core
dependencies (hishel's ``scripts/lint`` checks the same with no extras installed).
"""

from __future__ import annotations

import inspect
import re
import subprocess
import sys
from pathlib import Path

import pytest

import cachekit

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover (Python 3.10)
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())

# What the core dependencies import as (async_timeout: redis-py's own dependency on Python
# before 3.11.3).
CORE_IMPORTS = {"cachekit", "redis", "orjson", "msgspec", "async_timeout"}


def _top_level(requirement: str) -> str:
    """'fakeredis[lua]>=2.20' -> 'fakeredis'; 'prometheus-client' -> 'prometheus_client'."""
    match = re.match(r"[A-Za-z0-9_.-]+", requirement)
    assert match, requirement
    return match.group(0).lower().replace("-", "_").replace(".", "_")


def test_every_exported_name_exists() -> None:
    assert len(cachekit.__all__) == len(set(cachekit.__all__))
    for name in cachekit.__all__:
        assert hasattr(cachekit, name), name


def test_every_public_name_is_exported() -> None:
    # Submodules (cachekit.exceptions, cachekit.backends, ...) are attributes once imported
    # but are reached as modules, not through `from cachekit import *`.
    public = {
        name
        for name, value in vars(cachekit).items()
        if not name.startswith("_") and not inspect.ismodule(value)
    }
    assert public == set(cachekit.__all__)


def test_no_private_module_name_leaks() -> None:
    # A class or function shows the module users import it from: cachekit.Cache, not
    # cachekit._cache.Cache (reprs, tracebacks, docs); and pickle finds it there.
    for name in cachekit.__all__:
        assert not name.startswith("_"), name
        member = getattr(cachekit, name)
        if isinstance(member, type) or inspect.isfunction(member):
            module = member.__module__
            assert module == "cachekit" or module.startswith("cachekit."), (name, module)
            assert not any(part.startswith("_") for part in module.split(".")), (name, module)
            assert getattr(sys.modules[module], member.__qualname__) is member, name
        assert "cachekit._" not in repr(member), (name, repr(member))  # DEFAULT, MISSING too
    assert repr(cachekit.Cache) == "<class 'cachekit.Cache'>"


def test_import_needs_no_extras() -> None:
    """In a fresh interpreter that can import only the standard library and the core
    dependencies (every extra, the test tools and anything undeclared are refused),
    ``import cachekit`` works, a memory Cache stores and reads, and neither pytest nor
    cachekit.testing was imported."""
    code = (
        "import sys\n"
        f"allowed = {sorted(CORE_IMPORTS)!r}\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        top = name.partition('.')[0]\n"
        "        if top not in sys.stdlib_module_names and top not in allowed:\n"
        "            raise ImportError('blocked ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "import cachekit\n"
        "cache = cachekit.Cache(compress='auto')\n"
        "assert cache.set('k', {'a': [1, 2]}) and cache.get('k') == {'a': [1, 2]}\n"
        "@cache.cached(ttl=60)\n"
        "def double(x: int) -> int:\n"
        "    return 2 * x\n"
        "assert double(2) == double(2) == 4 and cache.stats()['hits'] >= 1\n"
        "leaked = sorted(m for m in sys.modules if m.startswith('cachekit.testing')"
        " or m.partition('.')[0] in {'pytest', '_pytest', 'wrapt', 'prometheus_client'})\n"
        "assert not leaked, leaked\n"
        "print('ok')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def _imported_top_levels() -> set[str]:
    """Every top-level module named in an import statement of the shipped code."""
    found: set[str] = set()
    pattern = re.compile(r"^\s*(?:from|import)\s+([A-Za-z_][A-Za-z0-9_]*)", re.MULTILINE)
    for folder in ("cachekit", "integrations"):
        for path in (ROOT / folder).rglob("*.py"):
            found.update(pattern.findall(path.read_text()))
    return found


def test_declared_dependencies_are_imported() -> None:
    """A core dependency, or a package of the `all` extra, is imported by cachekit's code
    (wrapt was declared and never imported)."""
    project = PYPROJECT["project"]
    extras = project["optional-dependencies"]
    core = {_top_level(req) for req in project["dependencies"]}
    assert core <= CORE_IMPORTS  # what test_import_needs_no_extras lets through
    in_all = re.fullmatch(r"cachekit\[(.*)\]", extras["all"][0])
    assert in_all, extras["all"]
    optional = {_top_level(req) for extra in in_all.group(1).split(",") for req in extras[extra]}
    # distributions whose import name differs from their project name
    optional = {{"opentelemetry_api": "opentelemetry"}.get(name, name) for name in optional}
    # hiredis is imported by redis-py alone, which uses it when it is installed
    assert (core | optional) - {"hiredis"} - _imported_top_levels() == set()


def test_testing_package_is_listed_and_servers_need_no_pytest() -> None:
    """cachekit.testing ships (a package listed for setuptools), its suite loads on
    first use, and cachekit.testing.servers works where pytest is not installed (the
    benchmarks, a user's own scripts)."""
    assert "cachekit.testing" in PYPROJECT["tool"]["setuptools"]["packages"]
    from cachekit.testing import CacheContract
    from cachekit.testing.contract import CacheContract as Defined

    assert CacheContract is Defined
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.partition('.')[0] in {'pytest', '_pytest'}:\n"
        "            raise ImportError('blocked ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "from cachekit.testing.servers import RedisServer, find_redis_server, free_port\n"
        "assert 0 < free_port() < 65536\n"
        "try:\n"
        "    from cachekit.testing import CacheContract\n"
        "except ImportError as exc:\n"
        "    assert 'pytest' in str(exc), exc\n"
        "else:\n"
        "    raise AssertionError('the suite imported without pytest')\n"
        "print('ok')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
