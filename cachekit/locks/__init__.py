"""``cache.lock``: one object for ``with`` and ``async with``."""
