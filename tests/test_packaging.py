"""pyproject.toml installs every package of the source tree: setuptools is given an explicit
list (the package-dir mapping of integrations/ rules out discovery), and a package missing
from it is missing from wheels and from the editable install's link tree, while tests run
from the checkout would still find it."""

from __future__ import annotations

from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

ROOT = Path(__file__).resolve().parent.parent


def test_every_package_is_listed() -> None:
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert setuptools["package-dir"]["cachekit.integrations"] == "integrations"
    found = {
        ".".join(init.parent.relative_to(ROOT).parts)
        for init in (ROOT / "cachekit").rglob("__init__.py")
    } | {
        "cachekit." + ".".join(init.parent.relative_to(ROOT).parts)
        for init in (ROOT / "integrations").rglob("__init__.py")
    }
    assert set(setuptools["packages"]) == found
