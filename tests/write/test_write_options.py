"""``Cache.write_behind``'s and ``write_through``'s keyword arguments are typed once
(WriteBehindOptions, WriteThroughOptions) and have their defaults and checks once (the
constructors): the two stay together."""

from __future__ import annotations

import inspect
from typing import Any

import pytest

from cachekit import Cache
from cachekit.exceptions import ConfigurationError
from cachekit.write.strategies import (
    WriteBehind,
    WriteBehindOptions,
    WriteThrough,
    WriteThroughOptions,
)


@pytest.mark.parametrize(
    ("typed", "constructor"),
    [(WriteBehindOptions, WriteBehind), (WriteThroughOptions, WriteThrough)],
)
def test_the_typed_options_are_the_constructors_keywords(typed: Any, constructor: Any) -> None:
    keywords = {
        p.name
        for p in inspect.signature(constructor.__init__).parameters.values()
        if p.kind is p.KEYWORD_ONLY
    }
    assert set(typed.__optional_keys__) == keywords
    assert not typed.__required_keys__


def test_options_reach_the_queue_and_are_checked_there() -> None:
    cache = Cache()
    stored: list[dict[object, object]] = []
    queue = cache.write_behind("user:{}", stored.append, batch_size=3, exit_timeout=1.0)
    try:
        for i in range(3):
            queue.set(i, i)
        queue.flush(5)
        assert sorted(k for batch in stored for k in batch) == [0, 1, 2]
        assert all(len(batch) <= 3 for batch in stored)
    finally:
        queue.close()
    with pytest.raises(ConfigurationError):
        cache.write_behind("user:{}", stored.append, batch_size=0)
    with pytest.raises(TypeError):
        cache.write_behind("user:{}", stored.append, batch_sise=3)  # type: ignore[call-arg]
    cache.close()
