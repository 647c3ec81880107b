"""Type-checked only (mypy --strict in .ci/run): Django's ``cache_page`` takes the HTTP
policy's fields as typed keywords (cachekit.http.PagePolicyOptions), Django's own
``key_prefix`` beside them; a misspelt one is an error."""

from __future__ import annotations

from typing import Any

from cachekit.integrations.django import cache_page


def view(request: Any) -> Any:
    return request


def pages() -> None:
    cache_page(60, key_prefix="shop", etag_from_body=True, vary_cookies=["lang"])(view)
    cache_page(None, cache="pages", lock=False, cacheable_statuses={200, 404})(view)
    cache_page(60, etag_from_bdy=True)(view)  # type: ignore[call-arg]
    cache_page(60, max_body_size="big")(view)  # type: ignore[arg-type]
