"""@cache.updates, @cache.invalidates and cache.write_through on every backend."""

from __future__ import annotations

from typing import Any

import pytest

from cachekit import Cache


class Source:
    def __init__(self) -> None:
        self.rows: dict[Any, Any] = {}
        self.loads = 0
        self.fail = False

    def load(self, item_id: Any) -> Any:
        self.loads += 1
        return self.rows.get(item_id)

    def store(self, item_id: Any, value: Any) -> None:
        if self.fail:
            raise RuntimeError("database is down")
        self.rows[item_id] = value

    def remove(self, item_id: Any) -> None:
        self.rows.pop(item_id, None)

    async def aload(self, item_id: Any) -> Any:
        return self.load(item_id)

    async def astore(self, item_id: Any, value: Any) -> None:
        self.store(item_id, value)


def test_get_is_cache_aside_through_load(any_cache: Cache) -> None:
    db = Source()
    db.rows[1] = {"name": "ann"}
    users = any_cache.write_through("user:{}", load=db.load, store=db.store)
    assert users.get(1) == {"name": "ann"}
    assert users.get(1) == {"name": "ann"}
    assert db.loads == 1
    assert any_cache.get("user:1") == {"name": "ann"}


def test_set_stores_to_the_source_then_the_cache(any_cache: Cache) -> None:
    db = Source()
    users = any_cache.write_through("user:{}", load=db.load, store=db.store, ttl=60)
    users.set(2, {"name": "bob"})
    assert db.rows[2] == {"name": "bob"}
    assert any_cache.get("user:2") == {"name": "bob"}
    assert users.get(2) == {"name": "bob"} and db.loads == 0


def test_a_failing_store_caches_nothing_and_raises(any_cache: Cache) -> None:
    db = Source()
    users = any_cache.write_through("user:{}", load=db.load, store=db.store)
    users.set(3, "v1")
    db.fail = True
    with pytest.raises(RuntimeError, match="database is down"):
        users.set(3, "v2")
    assert db.rows[3] == "v1"
    assert any_cache.get("user:3", default="absent") == "absent"  # not v2, not even v1
    assert users.get(3) == "v1"  # reloaded from the source


def test_delete_removes_from_source_and_cache(any_cache: Cache) -> None:
    db = Source()
    users = any_cache.write_through("user:{}", load=db.load, store=db.store, delete=db.remove)
    users.set(4, "x")
    assert users.delete(4) is True
    assert 4 not in db.rows and not any_cache.exists("user:4")


def test_sync_methods_refuse_an_async_store(any_cache: Cache) -> None:
    db = Source()
    users = any_cache.write_through("user:{}", load=db.aload, store=db.astore)
    with pytest.raises(TypeError, match="aget/aset"):
        users.set(1, "x")
    assert 1 not in db.rows


async def test_async_twins_take_async_and_sync_callables(any_cache: Cache) -> None:
    db = Source()
    users = any_cache.write_through("user:{}", load=db.aload, store=db.astore)
    await users.aset(5, "five")
    assert db.rows[5] == "five" and await any_cache.aget("user:5") == "five"
    db.fail = True
    with pytest.raises(RuntimeError):
        await users.aset(5, "FIVE")
    assert await any_cache.aget("user:5") is None
    assert await users.aget(5) == "five"
    plain = any_cache.write_through("plain:{}", load=db.load, store=db.store)
    assert await plain.aget(5) == "five"
    assert await plain.adelete(5) is True


def test_updates_stores_the_return_value(any_cache: Cache) -> None:
    calls = []

    @any_cache.cached(key="user:{user_id}")
    def get_user(user_id: int) -> dict[str, Any]:
        calls.append(user_id)
        return {"id": user_id, "name": "old"}

    @any_cache.updates(key="user:{user[id]}", tags=("users",))
    def save_user(user: dict[str, Any]) -> dict[str, Any]:
        return user

    assert get_user(1)["name"] == "old"
    save_user({"id": 1, "name": "new"})
    assert get_user(1)["name"] == "new" and calls == [1]
    assert save_user.__name__ == "save_user"
    assert any_cache.invalidate_tags("users") == 1
    assert get_user(1)["name"] == "old"


def test_invalidates_deletes_keys_and_tags_after_the_call(any_cache: Cache) -> None:
    any_cache.set("user:1", "u1")
    any_cache.set("profile:1", "p1")
    any_cache.set("list:a", "all", tags=["user-lists"])
    any_cache.set("user:2", "u2")

    @any_cache.invalidates(key=["user:{user_id}", "profile:{user_id}"], tags=("user-lists",))
    def delete_user(user_id: int) -> str:
        return "deleted"

    @any_cache.invalidates(key="user:{user_id}")
    def broken(user_id: int) -> None:
        raise ValueError("no")

    with pytest.raises(ValueError):
        broken(2)
    assert any_cache.get("user:2") == "u2"  # the function failed: nothing evicted
    assert delete_user(1) == "deleted"
    assert any_cache.get_many(["user:1", "profile:1", "list:a", "user:2"]) == {"user:2": "u2"}


async def test_updates_and_invalidates_on_coroutines(any_cache: Cache) -> None:
    @any_cache.updates(key="item:{item_id}")
    async def save(item_id: int, value: str) -> str:
        return value

    @any_cache.invalidates(key="item:{item_id}", tags=("item:{item_id}",))
    async def drop(item_id: int) -> None:
        return None

    assert await save(1, "one") == "one"
    await any_cache.aset("other", "o", tags=["item:1"])
    assert await any_cache.aget("item:1") == "one"
    await drop(1)
    assert await any_cache.aget("item:1") is None
    assert await any_cache.aget("other") is None  # tag template filled from the arguments
