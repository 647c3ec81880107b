from __future__ import annotations

import dataclasses
import uuid
from typing import Any

import pytest

from cachekit import Cache, ConfigurationError, InvalidKeyError
from cachekit._keys import MAX_KEY_LENGTH, KeyBuilder, Namespace, escape_glob, normalize_key


def test_normalize_key() -> None:
    assert normalize_key("a b\nc") == "a b\nc"
    assert normalize_key(42) == "42"
    assert normalize_key(("user", 42)) == "user:42"
    assert normalize_key(b"raw") == "raw"
    assert normalize_key(uuid.UUID(int=1)) == str(uuid.UUID(int=1))
    long = normalize_key("x" * 1000)
    assert len(long) < MAX_KEY_LENGTH and long != normalize_key("x" * 1001)
    with pytest.raises(InvalidKeyError, match="object"):
        normalize_key(object())


def test_namespace() -> None:
    ns = Namespace("shop", 3)
    assert ns.key("k") == "shop:3:k"
    assert ns.strip("shop:3:k") == "k"
    assert Namespace("a*[b]", 1).pattern("*") == r"a\*\[b\]:1:*"
    assert escape_glob("?") == r"\?"
    with pytest.raises(ConfigurationError):
        Namespace("")


def f(a: int, b: int = 2, *, c: str = "x") -> None: ...


def g(a: int, b: int = 2) -> None: ...


def varargs(a: int, *rest: int, **named: int) -> None: ...


def test_arguments_normalised_through_signature() -> None:
    keys = KeyBuilder(g)
    assert keys((1,), {}) == keys((1, 2), {}) == keys((), {"a": 1, "b": 2}) == keys((1,), {"b": 2})
    assert keys((1, 3), {}) != keys((1, 2), {})
    kw = KeyBuilder(f)
    assert kw((1,), {}) == kw((1,), {"c": "x"}) == kw((), {"a": 1, "b": 2, "c": "x"})
    assert kw((1,), {"c": "y"}) != kw((1,), {})
    va = KeyBuilder(varargs)
    assert va((1, 2), {}) != va((1,), {"x": 2})
    assert va((1,), {"x": 1, "y": 2}) == va((1,), {"y": 2, "x": 1})
    assert keys((1,), {}).startswith("test_keys.g:")


def test_string_and_int_arguments_differ() -> None:
    keys = KeyBuilder(g)
    assert keys((1,), {}) != keys(("1",), {})


def test_templates() -> None:
    @dataclasses.dataclass
    class User:
        id: int

    def save(user: User, force: bool = False) -> None: ...

    assert KeyBuilder(save, "user:{user.id}")((User(7),), {}) == "user:7"
    assert KeyBuilder(g, "g:{a}:{b}")((1,), {}) == "g:1:2"
    with pytest.raises(ConfigurationError, match="not a parameter"):
        KeyBuilder(g, "x:{nope}")


def test_callable_key_and_objects() -> None:
    assert KeyBuilder(g, lambda a, b=2: ("g", a))((5,), {}) == "g:5"

    class WithKey:
        def __cache_key__(self) -> str:
            return "stable"

    class Plain:
        pass

    keys = KeyBuilder(g)
    assert keys((WithKey(),), {}) == keys((WithKey(),), {})
    first, second = Plain(), Plain()
    assert keys((first,), {}) != keys((second,), {})  # identity-based, never shared wrongly


def test_full_key_matches_key(tmp_path: Any) -> None:
    cache = Cache(prefix="p")

    @cache.cached
    def h(x: Any, y: int = 0) -> Any:
        return x

    for args in [(1,), ("x" * 500,), ({"b": 1, "a": 2},)]:
        h(*args)
        assert cache.exists(h.key(*args))  # type: ignore[attr-defined]
