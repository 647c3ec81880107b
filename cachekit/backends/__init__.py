"""Backends: where entries live. See :mod:`cachekit.backends.base` for the contract."""

from .base import AsyncBackend, Backend
from .memory import AsyncMemoryBackend, MemoryBackend

__all__ = ["AsyncBackend", "AsyncMemoryBackend", "Backend", "MemoryBackend"]
