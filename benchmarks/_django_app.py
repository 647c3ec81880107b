"""The Django app of ``bench_http.py``: a single-file project, settings configured in code.

Gunicorn entry point ``_django_app:wsgi_app()``; the variant and the Redis URL come from
the environment (``BENCH_VARIANT``, ``BENCH_REDIS``), as for the Flask app. One URL,
``/page``, whose view burns ~2 ms of CPU (``bench_http.burn``), and ``POST /_runs``, how
many times that view ran. No middleware at all, in every variant: the page caching is the
decorator on the view, so the variants differ only by it and by the cache backend.

    django-uncached          the bare view
    django-cachekit          cachekit.integrations.django.cache_page(lock=True), CachekitCache
                             (cachekit.http entries: one GET per hit)
    django-cachekit-backend  Django's cache_page on CachekitCache
    django-redis             Django's cache_page on django-redis
    django-builtin-redis     Django's cache_page on django.core.cache.backends.redis.RedisCache
"""

from __future__ import annotations

import os
from typing import Any

import bench_http  # the sibling script (gunicorn runs with --chdir benchmarks/)

TTL = 60
BACKENDS = {
    "django-uncached": ("django.core.cache.backends.dummy.DummyCache", "bench-du"),
    "django-cachekit": ("cachekit.integrations.django.CachekitCache", "bench-dk"),
    "django-cachekit-backend": ("cachekit.integrations.django.CachekitCache", "bench-dkb"),
    "django-redis": ("django_redis.cache.RedisCache", "bench-dr"),
    "django-builtin-redis": ("django.core.cache.backends.redis.RedisCache", "bench-db"),
}


def wsgi_app() -> Any:
    import django
    from django.conf import settings

    variant = os.environ["BENCH_VARIANT"]
    backend, prefix = BACKENDS[variant]
    settings.configure(
        DEBUG=False,
        SECRET_KEY="cachekit-bench-not-secret",
        ALLOWED_HOSTS=["*"],
        ROOT_URLCONF=__name__,
        INSTALLED_APPS=[],
        MIDDLEWARE=[],
        USE_I18N=False,
        USE_TZ=True,
        CACHES={
            "default": {
                "BACKEND": backend,
                "LOCATION": os.environ["BENCH_REDIS"],
                "KEY_PREFIX": prefix,
                "TIMEOUT": TTL,
            }
        },
    )
    django.setup()
    from django.core.wsgi import get_wsgi_application

    return get_wsgi_application()


def _decorate(view: Any) -> Any:
    variant = os.environ["BENCH_VARIANT"]
    if variant == "django-uncached":
        return view
    if variant == "django-cachekit":
        from cachekit.integrations.django import cache_page

        return cache_page(TTL, lock=True)(view)
    from django.views.decorators.cache import cache_page as django_cache_page

    return django_cache_page(TTL)(view)


def _urlpatterns() -> list[Any]:
    from django.http import HttpRequest, HttpResponse
    from django.urls import path
    from django.views.decorators.csrf import csrf_exempt

    def page(request: HttpRequest) -> HttpResponse:
        return HttpResponse(bench_http.burn())

    @csrf_exempt
    def runs(request: HttpRequest) -> HttpResponse:
        return HttpResponse(str(bench_http._runs), content_type="text/plain")

    return [path("page", _decorate(page)), path("_runs", runs)]


def __getattr__(name: str) -> Any:
    """``urlpatterns``, built when Django's URL resolver first asks (after setup())."""
    if name == "urlpatterns":
        patterns = _urlpatterns()
        globals()["urlpatterns"] = patterns
        return patterns
    raise AttributeError(name)
