"""What README.md's examples use without defining it: your database (``db``), your HTTP
call (``http_get``), a ``User``, a loader, an existing redis-py client, a custom backend.

tests/test_readme.py runs every Python block of the README in a fresh namespace made by
:func:`namespace`; whatever a block defines (caches, apps, views, decorated functions), it
defines in the README itself. The stand-ins count their calls, so a test can check that
the README's cached functions really ran once.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from cachekit import Cache
from cachekit.backends.memory import MemoryBackend

#: the Redis URL the README's examples give; the tests replace it by their own server's
README_REDIS_URL = "redis://127.0.0.1:6379/0"
#: the Redis Cluster nodes and the sentinel the README's examples name (tests/test_readme.py
#: points them at the test session's cluster and sentinel)
README_CLUSTER_NODES = ("127.0.0.1:7000", "127.0.0.1:7001")
README_SENTINEL = "127.0.0.1:26379"


@dataclass
class User:
    id: int
    name: str


@dataclass
class Database:
    """A stand-in for the user's database, counting reads and writes."""

    users: dict[int, User] = field(
        default_factory=lambda: {1: User(1, "Grace"), 42: User(42, "Ada")}
    )
    reads: int = 0
    stored: list[Any] = field(default_factory=list)  # ids, in the order they were stored

    def load_user(self, user_id: int) -> dict[str, Any] | None:
        """A slow query returning a row as a dict."""
        self.reads += 1
        user = self.users.get(user_id)
        return None if user is None else asdict(user)

    def get_user(self, user_id: int) -> User | None:
        self.reads += 1
        return self.users.get(user_id)

    def save_user(self, user_id: int, user: Any) -> None:
        """``store(id, value)`` of write-through."""
        self.stored.append(user_id)

    def save_users(self, users: dict[Any, Any]) -> None:
        """``store_many({id: value})`` of write-behind (an upsert)."""
        self.stored.extend(users)


class HttpStandIn:
    """``await http_get(url) -> bytes``: a slow download, counted."""

    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self, url: str) -> bytes:
        self.calls += 1
        return f"<html>{url}</html>".encode()


class MyBackend(MemoryBackend):
    """A third-party backend, for the README's ``CacheContract`` example."""


def namespace(url: str, existing_redis_client: Any) -> dict[str, Any]:
    """The globals one README block starts from; ``cache`` is the Use section's, on the
    test's backend (``url``)."""
    loads: list[int] = []

    def load() -> dict[str, int]:
        loads.append(1)
        return {"loaded": len(loads)}

    return {
        "__name__": "readme_example",
        "cache": Cache(url, prefix="readme"),
        "db": Database(),
        "http_get": HttpStandIn(),
        "User": User,
        "user": User(42, "Ada"),
        "load": load,
        "existing_redis_client": existing_redis_client,
        "MyBackend": MyBackend,
    }
