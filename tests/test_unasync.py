"""scripts/unasync.py: sync twins by convention and generic rules, and ``--check`` failing
on stale output and on rules nothing uses (on a throwaway tree, not the repository)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent

SOURCE = '''"""Widgets for async callers.

This file is the source: ``pkg/deep/_sync_widget.py`` is generated from it by
``scripts/unasync.py`` (CI fails when they drift). Edit here, then run the script.
Over redis-py's asyncio client.
"""

from ._async_base import make_async_base


class AsyncWidget(AsyncBase):
    def __init__(self) -> None:
        self._scan, self._ascan = 1, 2
        self.target = make_async_base()

    async def __aenter__(self) -> AsyncWidget:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        async with self._ascan:
            pass
        async for item in self._ascan:
            await self._aflush(item)

    async def _aflush(self, item: object) -> None:
        return None

    async def add(self) -> AsyncThing:
        return AsyncThing()
'''

EXPECTED = '''"""Widgets for sync callers.

GENERATED from ``pkg/deep/_async_widget.py`` by
``scripts/unasync.py`` -- do not edit; edit the async source and run the script.
Over redis-py's client.
"""

from ._sync_base import make_sync_base


class Widget(Base):
    def __init__(self) -> None:
        self._scan, self._scan = 1, 2
        self.target = make_sync_base()

    def __enter__(self) -> Widget:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        with self._scan:
            pass
        for item in self._scan:
            self._flush(item)

    def _flush(self, item: object) -> None:
        return None

    def add(self) -> SyncThing:
        return SyncThing()
'''


@pytest.fixture
def script(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    spec = importlib.util.spec_from_file_location("unasync_script", ROOT / "scripts/unasync.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    (tmp_path / "pkg" / "deep").mkdir(parents=True)
    (tmp_path / "pkg" / "deep" / "_async_widget.py").write_text(SOURCE)
    monkeypatch.setattr(module, "ROOT", tmp_path)
    monkeypatch.setattr(module, "TREES", [tmp_path / "pkg"])
    monkeypatch.setattr(module, "RENAMED", {"AsyncThing": "SyncThing"})
    monkeypatch.setattr(module, "KEEP", {"add"})
    return module


def test_a_source_found_by_its_name_gets_its_twin_by_the_rules(script: ModuleType) -> None:
    assert script.main(check=True) == 1  # no twin yet: stale
    assert script.main(check=False) == 0
    twin = script.ROOT / "pkg" / "deep" / "_sync_widget.py"
    assert twin.read_text() == EXPECTED
    assert script.main(check=True) == 0


def test_check_fails_on_a_hand_edited_twin(
    script: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    script.main(check=False)
    twin = script.ROOT / "pkg" / "deep" / "_sync_widget.py"
    twin.write_text(twin.read_text() + "# edited by hand\n")
    assert script.main(check=True) == 1
    assert "stale: pkg/deep/_sync_widget.py" in capsys.readouterr().out


def test_check_fails_on_a_rule_nothing_uses(
    script: ModuleType, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    script.main(check=False)
    monkeypatch.setattr(script, "RENAMED", {"AsyncThing": "SyncThing", "AsyncGone": "Gone"})
    assert script.main(check=True) == 1
    assert "unused rule: 'AsyncGone'" in capsys.readouterr().out
    monkeypatch.setattr(script, "RENAMED", {"AsyncThing": "SyncThing"})
    monkeypatch.setattr(script, "KEEP", {"add", "append"})
    assert script.main(check=True) == 1
    assert "unused rule: 'append'" in capsys.readouterr().out


def test_the_repository_twins_are_current() -> None:
    spec = importlib.util.spec_from_file_location("unasync_repo", ROOT / "scripts/unasync.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(check=True) == 0
