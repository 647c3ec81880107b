"""The miss sentinel: a miss is not ``None`` (``None`` is a value like any other)."""

from __future__ import annotations

import enum
from typing import Final, Literal


class _Missing(enum.Enum):
    MISSING = "MISSING"

    def __repr__(self) -> str:
        return "MISSING"

    def __bool__(self) -> bool:
        return False


MISSING: Final = _Missing.MISSING
"""Returned by backends (and accepted as ``default``) to mean "no entry"."""

MissingType = Literal[_Missing.MISSING]
