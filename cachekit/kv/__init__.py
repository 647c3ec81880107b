"""The key/value API of :class:`cachekit.Cache` (get, set, ... and their a-twins): one async
source, ``_async_ops.py``, and its generated sync twin; the decisions in
:mod:`cachekit.core.policy`."""
