"""Run Django's own cache test suite (``BaseCacheTests``) against four Redis/memory backends.

Django's source distribution ships its tests; this script does not copy them, it imports
them from an unpacked sdist:

    pip download "django==$(python -c 'import django; print(django.__version__)')" \\
        --no-deps --no-binary :all: -d /tmp/djsrc
    tar xzf /tmp/djsrc/django-*.tar.gz -C /tmp/djsrc
    python tests/django_suite/run_django_cache_suite.py /tmp/djsrc/django-5.2.19

Every backend runs the 54 tests of ``tests/cache/tests.py::BaseCacheTests`` with all the
suite's cache aliases configured (``default``, ``prefix``, ``v2``, ``custom_key``,
``custom_key2``, ``cull``, ``zero_cull``), each against a redis-server this script starts
on a free port:

  builtin           django.core.cache.backends.redis.RedisCache
  django-redis      django_redis.cache.RedisCache
  cachekit-redis    cachekit.integrations.django.CachekitCache, LOCATION redis://
  cachekit-memory   cachekit.integrations.django.CachekitCache, LOCATION memory://

``incr_decr_type_error`` is what each backend's own test class expects (Django's
``RedisCacheTests`` uses redis.ResponseError for the built-in; django-redis raises
TypeError as Django's other backends do; cachekit raises a TypeError subclass). It prints
passed / failed / errors / skipped per backend with test names, then the tests the built-in
passes that a cachekit backend does not (exit status 1 if there are any).
"""

from __future__ import annotations

import argparse
import os
import sys
import tarfile
import tempfile
import unittest
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

BACKENDS = ("builtin", "django-redis", "cachekit-redis", "cachekit-memory")


def _find_tests_dir(source: Path) -> Path:
    """``<sdist>/tests`` from an unpacked sdist directory or a ``.tar.gz``."""
    if source.is_file():
        target = Path(tempfile.mkdtemp(prefix="djsrc-"))
        with tarfile.open(source) as archive:
            archive.extractall(target, filter="data")
        source = next(target.iterdir())
    for candidate in (source / "tests", source):
        if (candidate / "cache" / "tests.py").exists():
            return candidate
    raise SystemExit(f"no tests/cache/tests.py under {source}")


def _configure(tests_dir: Path) -> None:
    sys.path.insert(0, str(tests_dir))
    import django
    from django.conf import settings

    settings.configure(
        DEBUG=False,
        SECRET_KEY="django-cache-suite-runner",
        INSTALLED_APPS=["django.contrib.contenttypes", "cache"],
        DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
        CACHES={"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}},
        USE_TZ=True,
        DEFAULT_AUTO_FIELD="django.db.models.AutoField",
        MIDDLEWARE=[],
    )
    django.setup()


def _params(backend: str, url: str) -> tuple[dict[str, Any], Any]:
    """The base CACHES entry, and the exception incr/decr of a non-integer raise."""
    import redis

    if backend == "builtin":
        return (
            {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": url},
            redis.ResponseError,
        )
    if backend == "django-redis":
        return {"BACKEND": "django_redis.cache.RedisCache", "LOCATION": url}, TypeError
    location = url if backend == "cachekit-redis" else "memory://"
    backend_path = "cachekit.integrations.django.CachekitCache"
    return {"BACKEND": backend_path, "LOCATION": location}, TypeError


class _Result(unittest.TextTestResult):
    """Outcome per test; a test with a failing subtest counts as failed."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.outcomes: dict[str, str] = {}

    def _name(self, test: Any) -> str:
        test = getattr(test, "test_case", test)  # a _SubTest names its parent
        return str(test._testMethodName)

    def _mark(self, test: Any, outcome: str) -> None:
        name = self._name(test)
        if self.outcomes.get(name) in ("failed", "error") and outcome == "passed":
            return
        self.outcomes[name] = outcome

    def addSuccess(self, test: Any) -> None:
        super().addSuccess(test)
        self._mark(test, "passed")

    def addFailure(self, test: Any, err: Any) -> None:
        super().addFailure(test, err)
        self._mark(test, "failed")

    def addError(self, test: Any, err: Any) -> None:
        super().addError(test, err)
        self._mark(test, "error")

    def addSkip(self, test: Any, reason: str) -> None:
        super().addSkip(test, reason)
        self._mark(test, "skipped")

    def addSubTest(self, test: Any, subtest: Any, err: Any) -> None:
        super().addSubTest(test, subtest, err)
        if err is not None:
            failed = issubclass(err[0], test.failureException)
            self._mark(test, "failed" if failed else "error")


@contextmanager
def _redis_server() -> Iterator[str]:
    from cachekit.testing.servers import RedisServer

    server = RedisServer()
    try:
        yield server.url
    finally:
        server.stop()


def run_backend(backend: str, verbosity: int, suite_incr_error: bool) -> dict[str, str]:
    from cache.tests import BaseCacheTests, caches_setting_for_tests
    from cachekit.integrations.django import close_shared_caches
    from django.test import TestCase, override_settings

    with _redis_server() as url:
        params, incr_error = _params(backend, url)
        if suite_incr_error:
            incr_error = TypeError  # BaseCacheTests' own expectation, for every backend
        name = "Suite_" + backend.replace("-", "_")
        cls = type(name, (BaseCacheTests, TestCase), {"incr_decr_type_error": incr_error})
        cls.__module__ = "cache.tests"
        cls = override_settings(CACHES=caches_setting_for_tests(base=params))(cls)
        suite = unittest.defaultTestLoader.loadTestsFromTestCase(cls)
        stream = sys.stderr if verbosity > 1 else open(os.devnull, "w")  # noqa: SIM115
        try:
            result = unittest.TextTestRunner(
                stream=stream, verbosity=verbosity, resultclass=_Result
            ).run(suite)
        finally:
            from django.core.cache import caches

            for cache in caches.all(initialized_only=True):
                cache.close()
            close_shared_caches()
            if stream is not sys.stderr:
                stream.close()
        assert isinstance(result, _Result)
        if verbosity > 1:
            for test, trace in result.failures + result.errors:
                print(f"--- {backend}: {test}\n{trace}", file=sys.stderr)
        return result.outcomes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("django_source", type=Path, help="unpacked Django sdist (or its .tar.gz)")
    parser.add_argument("--backend", action="append", choices=BACKENDS, help="default: all")
    parser.add_argument("-v", "--verbosity", type=int, default=1)
    parser.add_argument(
        "--suite-incr-error",
        action="store_true",
        help="expect BaseCacheTests' TypeError from incr/decr of a non-integer on every "
        "backend (the built-in raises redis.ResponseError, so it then fails test_incr/decr)",
    )
    args = parser.parse_args(argv)
    _configure(_find_tests_dir(args.django_source))

    import django
    from django.conf import settings
    from django.test.utils import get_runner

    warnings.simplefilter("default")
    runner = get_runner(settings)(verbosity=0, interactive=False)
    runner.setup_test_environment()
    old_config = runner.setup_databases()
    results: dict[str, dict[str, str]] = {}
    try:
        for backend in args.backend or BACKENDS:
            results[backend] = run_backend(backend, args.verbosity, args.suite_incr_error)
    finally:
        runner.teardown_databases(old_config)
        runner.teardown_test_environment()

    print(f"Django {django.get_version()} tests/cache/tests.py BaseCacheTests")
    for backend, outcomes in results.items():
        by_kind: dict[str, list[str]] = {}
        for test, outcome in sorted(outcomes.items()):
            by_kind.setdefault(outcome, []).append(test)
        counts = ", ".join(
            f"{len(by_kind.get(kind, []))} {kind}"
            for kind in ("passed", "failed", "error", "skipped")
        )
        print(f"\n{backend}: {len(outcomes)} tests: {counts}")
        for kind in ("failed", "error", "skipped"):
            for test in by_kind.get(kind, []):
                print(f"    {kind:7} {test}")
    regressions = 0
    builtin = results.get("builtin")
    if builtin is not None:
        passed_builtin = {t for t, o in builtin.items() if o == "passed"}
        for backend in ("cachekit-redis", "cachekit-memory"):
            if backend not in results:
                continue
            missing = sorted(t for t in passed_builtin if results[backend].get(t) != "passed")
            regressions += len(missing)
            print(f"\npassed by builtin but not by {backend}: {', '.join(missing) or 'none'}")
    return 1 if regressions else 0


if __name__ == "__main__":
    sys.exit(main())
