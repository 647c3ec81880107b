#!/usr/bin/env python
"""Generate the sync twin of every async source, by naming convention and a few rules.

    python scripts/unasync.py           rewrite the generated files
    python scripts/unasync.py --check   exit 1 if a generated file is stale, or if a
                                        rule or table row below is no longer used

Which files (found, not listed): every ``_async_<name>.py`` under cachekit/ or
integrations/ is a source; its twin is ``_sync_<name>.py`` beside it.

How names change (whole identifiers only, so ``target`` stays ``target``):
  1. keywords: ``async def/with/for`` -> ``def/with/for``; ``await x`` -> ``x``;
     ``__aenter__ __aexit__ __aiter__ __anext__`` -> ``__enter__`` ...
  2. classes: ``AsyncX`` -> ``X`` (also ``_AsyncX`` -> ``_X``), except the few in RENAMED.
  3. ``async_`` inside an identifier -> ``sync_`` (``make_async_page``, ``_async_flights``,
     ``from ._async_backend import``).
  4. every name defined anywhere in cachekit/ or integrations/ (sources and the modules
     they import) by ``async def a<name>`` or ``async def _a<name>`` loses the ``a``
     (harvested with ast: a new ``async def aping`` needs no row), except KEEP (names that
     merely start with an a). A plain ``def`` twin is named by rule 3 (``_async_x``).
  5. an attribute ``_a<name>`` assigned in a module that also assigns ``_<name>`` is its
     async twin (``self._scan, self._ascan = ...``) and loses the ``a``.
  6. the source's header sentence "This file is the source: ``<sync path>`` is generated
     from it by ``scripts/unasync.py`` (CI fails when they drift). Edit here, then run
     the script." becomes "GENERATED from ``<async path>`` by ... -- do not edit; ...".
  7. (applied before 6) prose: ``async <word>`` -> ``sync <word>`` (``async callers``),
     ``asyncio client`` -> ``client``.
So name new async code ``AsyncX`` / ``async def a<name>`` / ``_a<attr>`` beside ``_<attr>``
and it needs no new row here.
"""

from __future__ import annotations

import ast
import re
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TREES = [ROOT / "cachekit", ROOT / "integrations"]
# sync names that are not the async name minus "Async" (the plain name is taken)
RENAMED = {
    "AsyncHttpCache": "SyncHttpCache",  # HttpCache is the public class both build on
    "AsyncClientProvider": "SyncClientProvider",  # public in cachekit.backends.redis
}
KEEP = {"add", "acquire"}  # async defs whose name merely starts with an "a"


def _generated(path: Path) -> bool:
    return path.name.startswith("_sync_")


def pairs() -> list[tuple[Path, Path]]:
    return sorted(
        (s, s.with_name("_sync_" + s.name[7:])) for tree in TREES for s in tree.rglob("_async_*.py")
    )


def harvest() -> dict[str, str]:
    """Rules 4 and 5: the ``a``-prefixed names the code defines, each without its ``a``."""
    names: dict[str, str] = {}
    for path in (p for tree in TREES for p in tree.rglob("*.py") if not _generated(p)):
        attrs: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.AsyncFunctionDef):
                match = re.fullmatch(r"(_?)a((?!sync)[a-z_]\w*)", node.name)
                if match and node.name not in KEEP:
                    names[node.name] = match[1] + match[2]
            targets = node.targets if isinstance(node, ast.Assign) else []
            targets = [node.target] if isinstance(node, ast.AnnAssign) else targets
            for target in targets:
                for item in target.elts if isinstance(target, ast.Tuple) else [target]:
                    if isinstance(item, ast.Attribute):
                        attrs.add(item.attr)
                    elif isinstance(item, ast.Name):
                        attrs.add(item.id)
        names.update({a: "_" + a[2:] for a in attrs if a.startswith("_a") and "_" + a[2:] in attrs})
    return names


def rules(names: dict[str, str]) -> list[tuple[str, str | Callable[[re.Match[str]], str]]]:
    def ident(match: re.Match[str]) -> str:
        word = match[0]
        if word in RENAMED:
            return RENAMED[word]
        return names.get(word) or re.sub(r"^(_*)Async(?=[A-Z])", r"\1", word)

    header = (
        r"This file is the source: ``(\S+?)``(\s+)is generated from it by(\s+)"
        r"(``scripts/unasync.py``\s+)\(CI fails when they drift\). Edit here, then run the script."
    )
    generated = "-- do not edit; edit the async source and run the script."
    return [
        (r"\basync (def|with|for)\b", r"\1"),
        (r"\bawait ", ""),
        (r"\b__a(enter|exit|iter|next)__\b", r"__\1__"),
        (r"(?<![A-Za-z0-9])async_(?=\w)", "sync_"),
        (
            r"\b(" + "|".join([r"_*Async[A-Z]\w*", *sorted(names, key=len, reverse=True)]) + r")\b",
            ident,
        ),
        (r"\basync (?=[a-z])", "sync "),
        (r"\basyncio client\b", "client"),
        (
            header,
            lambda m: (
                "GENERATED from ``"
                + m[1].replace("_sync", "_async")
                + f"``{m[2]}by{m[3]}{m[4]}{generated}"
            ),
        ),
    ]


def main(check: bool) -> int:
    names = harvest()
    table = rules(names)
    used: set[str] = set()
    stale: list[str] = []
    for source, target in pairs():
        text = source.read_text()
        for pattern, replacement in table:
            text, count = re.subn(pattern, replacement, text)
            if count:
                used.add(pattern)
        if not check:
            target.write_text(text)
        elif not target.exists() or target.read_text() != text:
            stale.append(str(target.relative_to(ROOT)))
        used.update(
            w for w in RENAMED | dict.fromkeys(KEEP) if re.search(rf"\b{w}\b", source.read_text())
        )
    unused = [p for p, _ in table if p not in used] + sorted((set(RENAMED) | KEEP) - used)
    for name in stale:
        print(f"stale: {name} (run python scripts/unasync.py)")
    for rule in unused:
        print(f"unused rule: {rule!r}")
    return 1 if (stale or unused) else 0


if __name__ == "__main__":
    sys.exit(main("--check" in sys.argv[1:]))
