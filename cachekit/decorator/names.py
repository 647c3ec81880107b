"""Which function a default key belongs to, per cache.

A default key starts with ``module.qualname``. Two functions can have the same one: the
closures a factory makes (``def make(db): @cache.cached() def load(x): return db[x]``),
two lambdas of one module, two local functions of one name, a decorator without
``functools.wraps`` (every result is ``deco.<locals>.wrapper``). On one cache they would
share entries and return each other's results, so :func:`claim` refuses the second one
at decoration with a :class:`~cachekit.exceptions.ConfigurationError` asking for
``name=`` (or ``key=``).

What counts as the same function: the same code and, while the first is alive, the same
captured objects (closure cells compared by identity) and module globals. So a test
that runs again, a loop or a factory called twice with the same values decorates freely;
``multiplier(2)`` and ``multiplier(3)`` do not. Names without ``<locals>`` or
``<lambda>`` are module-level definitions, unique in their module: a second one is the
module reloaded (``importlib.reload``, notebook autoreload) and takes over.

Limits: a function that was garbage-collected can no longer be compared by its captured
values (only by its code), and nothing here sees other processes: on a shared (Redis)
cache, a factory's functions need ``name=`` whenever what they capture differs between
processes. The check runs once per decoration, never per call.
"""

from __future__ import annotations

import gc
import threading
import weakref
from collections.abc import Callable
from typing import Any

from ..exceptions import ConfigurationError

__all__ = ["claim"]

_lock = threading.Lock()
# cache -> {module.qualname: the function that has it}; entries go with their cache
_claims: weakref.WeakKeyDictionary[Any, dict[str, _Claim]] = weakref.WeakKeyDictionary()


class _Claim:
    __slots__ = ("code", "func")

    def __init__(self, func: Callable[..., Any]) -> None:
        self.code = getattr(func, "__code__", None)
        try:
            self.func: weakref.ref[Callable[..., Any]] | None = weakref.ref(func)
        except TypeError:  # a callable object that cannot be weakly referenced
            self.func = None

    def admits(self, func: Callable[..., Any]) -> bool:
        """Whether ``func`` may share this claim's entries (it computes the same thing)."""
        holder = self.alive()
        if holder is func:
            return True
        code = getattr(func, "__code__", None)
        if self.code != code:  # another definition: alive or not, its entries are there
            return False
        if holder is None:  # collected, so its captured values are gone; the same code
            return True
        return code is not None and _same_captures(holder, func)

    def alive(self) -> Callable[..., Any] | None:
        return self.func() if self.func is not None else None


def _same_captures(one: Any, other: Any) -> bool:
    if getattr(one, "__globals__", None) is not getattr(other, "__globals__", None):
        return False
    cells = getattr(one, "__closure__", None) or ()
    others = getattr(other, "__closure__", None) or ()
    if len(cells) != len(others):
        return False
    for cell, twin in zip(cells, others):
        if cell is twin:
            continue
        try:
            if cell.cell_contents is not twin.cell_contents:
                return False
        except ValueError:  # an empty cell (assigned later in the enclosing function)
            return False
    return True


def claim(cache: Any, name: str, func: Callable[..., Any]) -> None:
    """Record that ``func`` uses the default keys ``name:...`` on ``cache``; raise
    :class:`ConfigurationError` if another function already does."""
    if "<locals>" not in name and "<lambda>" not in name:
        return  # a module-level definition: another one is the module reloaded
    for attempt in (1, 2):
        with _lock:
            claims = _claims.setdefault(cache, {})
            held = claims.get(name)
            if held is None or held.admits(func):
                if held is None or held.alive() is None:
                    claims[name] = _Claim(func)
                return
        if attempt == 1:
            # the holder may be garbage in a reference cycle (a finished test's or a
            # dropped factory's function): only a live one with other captures conflicts
            gc.collect()
    short = name.rsplit(".", 1)[-1]
    raise ConfigurationError(
        f"@cached: {name} already has default keys on this cache, from another function "
        f"of that name (a closure with other captured values, another lambda or local "
        f"function of that name): they would share entries and return each other's "
        f'results. Give each its own name= (e.g. name=f"{short}:{{...}}" with what it '
        f"captures) or key="
    )
