"""The ``cachekit`` command line (``python -m cachekit``): look at and act on a cache's
namespace in Redis without writing redis-cli scripts.

Configured like the library: ``--url`` / ``CACHEKIT_URL``, ``--prefix`` /
``CACHEKIT_PREFIX`` and every other ``CACHEKIT_*`` option (``CACHEKIT_SECRET`` to read
signed entries), through :meth:`cachekit.Cache.from_env`. Exit codes: :data:`OK` (0),
:data:`NOT_OK` (1: a failed health check, a missing or undecodable key), :data:`USAGE` (2:
bad arguments or configuration), :data:`NO_CONNECTION` (3: Redis cannot be reached).
"""

from .main import COMMANDS, NO_CONNECTION, NOT_OK, OK, USAGE, main

__all__ = ["COMMANDS", "NO_CONNECTION", "NOT_OK", "OK", "USAGE", "main"]
