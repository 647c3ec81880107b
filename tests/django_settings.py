"""Django settings for cachekit's Django tests, configured once per process.

Caches are filled in per test with ``override_settings`` (the redis-server is a fixture);
the defaults here are an in-memory CachekitCache.
"""

from __future__ import annotations

import threading

_lock = threading.Lock()


def configure(root_urlconf: str) -> None:
    """``settings.configure`` + ``django.setup()``, the first time only."""
    import django
    from django.conf import settings

    with _lock:
        if settings.configured:
            return
        settings.configure(
            DEBUG=False,
            SECRET_KEY="cachekit-tests-not-secret",
            ALLOWED_HOSTS=["*"],
            ROOT_URLCONF=root_urlconf,
            INSTALLED_APPS=["django.contrib.sessions"],
            DATABASES={},
            MIDDLEWARE=[],
            CACHES={
                "default": {
                    "BACKEND": "cachekit.integrations.django.CachekitCache",
                    "LOCATION": "memory://",
                }
            },
            SESSION_ENGINE="django.contrib.sessions.backends.cache",
            USE_TZ=True,
            DEFAULT_AUTO_FIELD="django.db.models.AutoField",
        )
        django.setup()
