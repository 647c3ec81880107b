"""What the Starlette, Flask and Django adapters share beyond the drivers: policies from
their options, raw request parts and headers as text, and the final response's say on
caching. Framework-neutral: no web framework is imported here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from ..exceptions import ConfigurationError
from .rules import HttpCachePolicy

__all__ = ["caching_headers_from", "decode_path", "header_pairs", "make_policy"]


# the policy fields that are also cache options (the options table): a cache's own value
# applies where the adapter's options and policy leave them empty
_CACHE_OPTION_FIELDS = ("ignore_cookies", "vary_cookies")


def make_policy(
    policy: HttpCachePolicy | None = None,
    ttl: float | object | None = ...,
    *,
    defaults: Mapping[str, Any] | None = None,
    **options: Any,
) -> HttpCachePolicy:
    """An :class:`HttpCachePolicy` from a base (default: the module's) and overrides.

    ``ttl`` is the policy's ``default_ttl``: the lifetime of a response that states no
    freshness of its own (None: store only responses that do). ``defaults``: a cache's
    options (``cache.options``, or framework settings): ``ignore_cookies`` and
    ``vary_cookies`` come from there unless ``options`` or ``policy`` set them.
    """
    base = policy or HttpCachePolicy()
    fields = {name: getattr(base, name) for name in base.__dataclass_fields__}
    if ttl is not ...:
        fields["default_ttl"] = ttl
    unknown = set(options) - set(fields)
    if unknown:
        raise ConfigurationError(f"unknown HTTP cache option(s): {', '.join(sorted(unknown))}")
    for name in _CACHE_OPTION_FIELDS:
        if defaults and not fields[name] and defaults.get(name):
            fields[name] = defaults[name]
    fields.update(options)
    return HttpCachePolicy(**fields)


def decode_path(raw: bytes) -> str:
    """A raw request target part as text: UTF-8 when it is, else byte for byte (latin-1)."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def header_pairs(raw: Iterable[tuple[bytes, bytes]]) -> list[tuple[str, str]]:
    """ASGI/raw header pairs as text (latin-1, as cachekit.http expects)."""
    return [(name.decode("latin-1"), value.decode("latin-1")) for name, value in raw]


def caching_headers_from(
    final: Iterable[tuple[str, str]], view: Iterable[tuple[str, str]], policy: HttpCachePolicy
) -> list[tuple[str, str]]:
    """A view's response headers with the *final* response's say on caching (after the
    framework's hooks or middleware ran on it): the final Cache-Control, Expires and
    Pragma, and the union of both responses' Vary and tag headers.

    For adapters that store what the view returned (hits are handed back to the
    framework, whose hooks then run on them as on a miss) while what the hooks declared
    about caching (``private``, ``max-age``, a Vary) must rule the entry.

    Under ``policy.vary_cookies`` a final ``Vary: Cookie`` the view lacks is left out: it
    is the one every miss is sent with for caches downstream (`mark_miss`), and keying
    the entry by the whole Cookie header would split it per analytics cookie.
    """
    final, view = list(final), list(view)
    if policy.vary_cookies:
        final = _without_vary(final, "cookie")
    tag = policy.tag_header.lower()
    replaced = {"cache-control", "expires", "pragma"}
    headers = [
        (name, value) for name, value in view if name.lower() not in {*replaced, "vary", tag}
    ]
    headers += [(name, value) for name, value in final if name.lower() in replaced]
    for joined, spelling in (("vary", "Vary"), (tag, policy.tag_header)):
        items = {
            item.strip().lower(): item.strip()
            for name, value in (*view, *final)
            if name.lower() == joined
            for item in value.split(",")
            if item.strip()
        }
        if items:
            headers.append((spelling, ", ".join(items.values())))
    return headers


def _without_vary(headers: list[tuple[str, str]], name: str) -> list[tuple[str, str]]:
    """`headers` with `name` (lower case) taken out of their Vary fields."""
    kept = []
    for header, value in headers:
        if header.lower() == "vary":
            value = ", ".join(i.strip() for i in value.split(",") if i.strip().lower() != name)
            if not value:
                continue
        kept.append((header, value))
    return kept
