"""Telling a stampede wrapper's computed values from cached ones (no I/O).

The stampede (:mod:`cachekit.stampede`) returns one value whatever it came from: the
cache, a stale entry, another process's entry, or a computation (this call's, or the
one in this process it waited for). A value read from the cache is decoded into the
return annotation; a computed one must not be, it is the function's own result (an
annotation that lies, ``-> datetime`` returning a str, would convert it). A computed value
that is stored is faithful (its hit equals it: ``CachePlan.should_store``), so only one
that is *not* stored needs telling apart: the compute step returns it as a
:class:`NotStored`, which the stampede never stores (its ``should_store`` is
:func:`is_stored`), hands to the callers waiting in this process, and the wrapper unwraps.

A Redis lock holder still tries to encode it for the other processes' waiters (it cannot:
they get nothing and compute themselves). That one encoding error is expected and not
reported: the compute step marks its context (a ContextVar: a thread, a task) until the
error comes or the wrapper unwraps the value (:func:`quiet_unencodable`, :func:`unwrap`).
"""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

__all__ = ["NotStored", "is_stored", "not_stored", "quiet_unencodable", "stored", "unwrap"]


class NotStored:
    """A computed value the cache will not keep, on its way to the wrapper."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def __repr__(self) -> str:
        return f"NotStored({self.value!r})"


# set while this context's last computation is a NotStored whose encoding may be tried
_UNSTORED: ContextVar[bool] = ContextVar("cachekit_unstored", default=False)


def not_stored(value: Any) -> NotStored:
    """``value`` (computed, not to be stored) on its way to the wrapper."""
    _UNSTORED.set(True)
    return NotStored(value)


def stored(value: Any) -> Any:
    """``value`` (computed, to be stored) as it is: an error encoding it is reported."""
    if _UNSTORED.get():
        _UNSTORED.set(False)
    return value


def is_stored(value: Any) -> bool:
    """The stampede's ``should_store``: the compute step has decided already."""
    return type(value) is not NotStored


def unwrap(marker: NotStored) -> Any:
    if _UNSTORED.get():
        _UNSTORED.set(False)
    return marker.value


def quiet_unencodable(report: Callable[[str, Any], bool]) -> Callable[[str, Any], bool]:
    """``report`` (the stampede's ``unencodable``), except for the one encoding a lock
    holder tries of the NotStored this context just computed."""

    def unencodable(key: str, exc: Any) -> bool:
        if _UNSTORED.get():
            _UNSTORED.set(False)
            return False
        return report(key, exc)

    return unencodable
