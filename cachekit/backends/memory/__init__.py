"""The in-process backend: a bounded LRU dict with per-entry TTL (store.py), W-TinyLFU
eviction (tinylfu.py), and redis-py-style locks (lock.py)."""

from .store import AsyncMemoryBackend, MemoryBackend

__all__ = ["AsyncMemoryBackend", "MemoryBackend"]
