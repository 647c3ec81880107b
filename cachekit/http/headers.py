"""HTTP header fields as the cache reads them: lists, Cache-Control, delta-seconds,
HTTP-dates, entity tags, structured-field tokens (RFC 9110, 9111, 8941). Pure."""

from __future__ import annotations

import calendar
import re
from collections.abc import Iterable
from email.utils import parsedate_tz

_MAX_DELTA = 2**31  # RFC 9111 1.2.2: larger delta-seconds are taken as 2^31
_SF_TOKEN = re.compile(r"[A-Za-z*][!#$%&'*+\-.^_`|~:/0-9A-Za-z]*")


def _header_index(headers: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Lower-cased names to values, repeated fields joined with ", " (RFC 9110 5.3)."""
    index: dict[str, str] = {}
    for name, value in headers:
        key = name.lower()
        index[key] = f"{index[key]}, {value}" if key in index else value
    return index


# ------------------------------------------------------------------ header parsing


def _split_list(value: str) -> list[str]:
    """Split a comma-separated field value; commas inside quoted strings don't split."""
    if '"' not in value:
        parts = value.split(",")
    else:
        parts, start, quoted, escaped = [], 0, False, False
        for i, char in enumerate(value):
            if escaped:
                escaped = False
            elif quoted and char == "\\":
                escaped = True
            elif char == '"':
                quoted = not quoted
            elif char == "," and not quoted:
                parts.append(value[start:i])
                start = i + 1
        parts.append(value[start:])
    return [stripped for part in parts if (stripped := part.strip())]


def parse_cache_control(value: str | None) -> dict[str, str | None]:
    """Directives by lower-cased name; a directive without argument maps to None.

    Quoted arguments are unquoted; the first of duplicate directives wins (RFC 9111
    4.2.1). Never raises. Numbers are checked where they are used, not here.
    """
    directives: dict[str, str | None] = {}
    for item in _split_list(value or ""):
        name, equals, argument = item.partition("=")
        name = name.strip().lower()
        if not name or name in directives:
            continue
        argument = argument.strip()
        if len(argument) >= 2 and argument[0] == argument[-1] == '"':
            argument = re.sub(r"\\(.)", r"\1", argument[1:-1], flags=re.DOTALL)
        directives[name] = argument if equals else None
    return directives


def _delta_seconds(value: str | None) -> int | None:
    """A delta-seconds value, or None when absent or not a plain non-negative integer."""
    if value is None or not value.isascii() or not value.isdigit():
        return None
    return _MAX_DELTA if len(value) > 10 else min(int(value), _MAX_DELTA)


def _http_date(value: str | None) -> float | None:
    """An HTTP-date as unix time, or None when absent or invalid."""
    if not value:
        return None
    try:
        parts = parsedate_tz(value)
        if parts is None:
            return None
        return float(calendar.timegm(parts[:6]) - (parts[9] or 0))  # no zone: GMT
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def _opaque_tag(tag: str) -> str:
    return tag[2:] if tag.startswith("W/") else tag


def _etag_matches(if_none_match: str, etag: str | None) -> bool:
    """If-None-Match evaluation with weak comparison (RFC 9110 13.1.2)."""
    members = _split_list(if_none_match)
    if "*" in members:
        return True
    if etag is None:
        return False
    opaque = _opaque_tag(etag)
    return any(_opaque_tag(member) == opaque for member in members)


def _sf_string_or_token(name: str) -> str:
    if _SF_TOKEN.fullmatch(name):
        return name
    printable = "".join(c if " " <= c <= "~" else "?" for c in name)
    return '"' + printable.replace("\\", "\\\\").replace('"', '\\"') + '"'
