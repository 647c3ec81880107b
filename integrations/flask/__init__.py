"""Flask extension: response caching for views (or the whole app) and function caching.

::

    from cachekit.integrations.flask import FlaskCache

    fcache = FlaskCache(app)                 # or FlaskCache() + fcache.init_app(app)

    @app.get("/products/<int:pid>")
    @fcache.cached(ttl=60)                   # a view: its HTTP response is cached
    def product(pid): ...

    @fcache.cached(ttl=60)                   # a plain function: its result is cached
    def load_prices(region): ...

Configuration (``app.config``; constructor keywords, lower-case and without the prefix,
are the defaults): ``CACHEKIT_URL`` (``"memory://"``), a ``CACHEKIT_<OPTION>`` key per
:class:`cachekit.Cache` option (``CACHEKIT_PREFIX``, ``CACHEKIT_VERSION``,
``CACHEKIT_SERIALIZER``, ``CACHEKIT_TIMEOUT``, ...: the README's options table; values as
Python objects or text), of which ``CACHEKIT_DEFAULT_TTL`` defaults to 300 here (entries,
and responses that state no freshness of their own), ``CACHEKIT_OPTIONS`` (the same
options as a dict, lower-case); an unknown ``CACHEKIT_*`` key is a
:class:`~cachekit.ConfigurationError`, and the URL's query string wins over these keys;
``CACHEKIT_HTTP`` (:class:`cachekit.http.HttpCachePolicy` fields: ``max_body_size``,
``cacheable_statuses``, ``etag_from_body``, ``tag_header``, ...; ``ignore_cookies`` and
``vary_cookies`` default to ``CACHEKIT_IGNORE_COOKIES`` / ``CACHEKIT_VARY_COOKIES``,
options of the table), ``CACHEKIT_CACHE_ALL``
(False), ``CACHEKIT_LOCK`` (None: cross-process coalescing when the backend is remote).
Or give a ready :class:`cachekit.Cache` as ``FlaskCache(app, cache=cache)``.

Views or functions: ``@fcache.cached`` decides at call time. When the call is the
dispatch of the current request's endpoint (the decorated function is, or is wrapped
by, ``app.view_functions[request.endpoint]``), the HTTP response is cached, keyed by
scheme, host, path and normalised query string, under the rules of
:mod:`cachekit.http` (Cache-Control, Vary, Set-Cookie, Authorization, 304s, ``Age`` and
``Cache-Status``); any other call caches the return value with the cache's ``cached``
(outside an app context too, in the app given to ``FlaskCache(app)``).
Say which explicitly with ``@fcache.cached_view`` or ``@fcache.memoize``.

A cached view stands in for the view: the entry is what the view returned, and a hit
is handed to Flask as if the view had returned it again, so outer decorators,
``before_request`` hooks (which may refuse it), ``after_request`` hooks and the session
run on hits as on misses. Whether a miss is stored is decided on the *final* response,
after every ``after_request`` hook and the session have been applied (Flask's
``request_finished``): a response a hook made ``private``, ``no-store`` or gave a
``Set-Cookie`` is never stored; while that is decided, concurrent requests for the URL
wait for it.

A hit is answered before Flask dispatches it (one backend read, no request context)
only where that changes nothing: FlaskCache wraps Flask's own ``wsgi_app`` (no WSGI
middleware was installed before ``init_app``; middleware installed after it runs
first anyway), the URL routes to the cached view itself (no other decorator around
it), the app has no request hooks (before, after, teardown, URL value preprocessors)
or request and app-context signal receivers, and the request carries no session
cookie. Otherwise hits are answered inside the view.

``CACHEKIT_CACHE_ALL = True`` puts a shared cache in front of the whole app (it wraps
``app.wsgi_app``, like a reverse proxy would sit in front): every cacheable GET response
is stored, seeing the final headers (session cookies included), and a hit is answered
before Flask dispatches the request, so ``before_request`` hooks do not run for hits.
It must be the innermost WSGI layer (``init_app`` before any ``app.wsgi_app = ...``
middleware, which then runs on hits too): keys are made from the request Flask sees.
A ``@fcache.cached_view(ttl=...)`` under it sets that view's TTL.

Concurrent requests for the same cold URL run the view once (threads coalesce; with a
remote backend, processes too, through ``cache.lock``). A failing backend never fails a
request: the view answers.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, TypeVar

from .. import missing_extra

try:
    from flask import Flask, current_app, has_app_context, has_request_context, request
    from flask import Response as FlaskResponse
    from flask.globals import request_ctx
    from flask.signals import (
        appcontext_pushed,
        request_finished,
        request_started,
        request_tearing_down,
    )
    from werkzeug.datastructures import Headers
except ModuleNotFoundError as exc:
    raise missing_extra(exc, "flask", "flask") from exc

from cachekit import DEFAULT, Cache, ConfigurationError
from cachekit.http import (
    CachedResponse,
    Forward,
    Hit,
    HttpCachePolicy,
    Probe,
    Request,
    Response,
    SyncHttpCache,
    caching_headers_from,
    decode_path,
    make_policy,
    mark_miss,
    store_precheck,
)

__all__ = ["FlaskCache"]

logger = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])
StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]
Decided = Callable[[CachedResponse | None], None]

EXTENSION = "cachekit"
_FRONT = "cachekit.front"  # environ: the app-wide cache forwarded this request
_VIEW_POLICY = "cachekit.policy"  # environ: the policy a cached view asks the front to use
_PROBED = "cachekit.probed"  # environ: the view front's lookup, for the view to carry on from
_PENDING = "cachekit.pending"  # environ: a miss to store once the final response is known
_VIEW_MARK = "_cachekit_view"  # on a cached view's wrapper: its _ViewMark
_MATCHES_MAX = 4096  # remembered URL -> endpoint matches per app (forgotten all at once)
_POLICY_FIELDS = frozenset(f.name for f in dataclasses.fields(HttpCachePolicy))
_MEMO_OPTIONS = frozenset({"key", "tags", "cache_none", "condition", "unless"})
# the extension's own settings (app.config["CACHEKIT_" + name.upper()]) and their defaults;
# every cachekit option is a setting too (CACHEKIT_PREFIX, ...: the options table)
_DEFAULTS: dict[str, Any] = {
    "url": "memory://",
    "options": {},  # more options as {name: value}; a CACHEKIT_<NAME> key wins over it
    "http": {},
    "cache_all": False,
    "lock": None,
    "ratelimit": {},  # rate limits: a default rate and options (see ratelimit.py)
}
_OWN_KEYS = tuple("CACHEKIT_" + name.upper() for name in _DEFAULTS)
_DEFAULT_TTL = 300.0  # entries, and responses that state no freshness of their own


@dataclass
class _State:
    cache: Cache
    http: SyncHttpCache
    policy: HttpCachePolicy
    policies: dict[int, HttpCachePolicy] = field(default_factory=dict)

    def policy_for(self, overrides: dict[str, Any]) -> HttpCachePolicy:
        """The policy of a view with these overrides (made once per app)."""
        policy = self.policies.get(id(overrides))
        if policy is None:
            policy = self.policies[id(overrides)] = make_policy(self.policy, **overrides)
        return policy


@dataclass(frozen=True)
class _ViewMark:
    """Set on the function ``@fcache.cached`` returns for a view: whose, and which."""

    owner: FlaskCache
    wrapper: Callable[..., Any]
    overrides: dict[str, Any]


def _text(raw: str) -> str:
    """A WSGI path or query (bytes as latin-1) as the text that was sent."""
    return raw if raw.isascii() else decode_path(raw.encode("latin-1"))


def request_from_environ(environ: dict[str, Any]) -> Request:
    """The :class:`cachekit.http.Request` of a WSGI environ (path and query as sent)."""
    path = _text(environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", ""))
    query = _text(environ.get("QUERY_STRING", ""))
    headers = [
        (name[5:].replace("_", "-"), value)
        for name, value in environ.items()
        if name[:5] == "HTTP_"
    ]
    host = (
        environ.get("HTTP_HOST")
        or f"{environ.get('SERVER_NAME', '')}:{environ.get('SERVER_PORT', '')}"
    )
    return Request(
        environ.get("REQUEST_METHOD", "GET"),
        environ.get("wsgi.url_scheme", "http"),
        host,
        path,
        query,
        headers,
    )


@functools.lru_cache(maxsize=64)
def _status_line(status: int) -> str:
    try:
        return f"{status} {HTTPStatus(status).phrase}"
    except ValueError:
        return f"{status} Unknown"


def _to_flask(response: Response) -> FlaskResponse:
    headers = list(response.headers)
    result: FlaskResponse = current_app.response_class(
        response.body, status=response.status, headers=headers
    )
    if not response.body:  # HEAD and 304: keep the stored Content-Length, if any
        length = [value for name, value in headers if name.lower() == "content-length"]
        if length:
            result.headers["Content-Length"] = length[0]
        else:
            result.headers.pop("Content-Length", None)
    return result


class _Passthrough:
    """A WSGI body passed on unbuffered (after an already-read first chunk), closed once."""

    def __init__(self, head: list[bytes], body: Iterable[bytes]) -> None:
        self._head = head
        self._body = body

    def __iter__(self) -> Iterator[bytes]:
        yield from self._head
        yield from self._body

    def close(self) -> None:
        close = getattr(self._body, "close", None)
        if close is not None:
            close()


class _FrontCache:
    """``CACHEKIT_CACHE_ALL``: a shared cache around ``app.wsgi_app``."""

    def __init__(self, app: WSGIApp, state: _State) -> None:
        self.app = app
        self.state = state

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        state = self.state
        req = request_from_environ(environ)

        def on_hit(response: Response) -> Iterable[bytes]:
            start_response(_status_line(response.status), list(response.headers))
            return [response.body]

        def forward(step: Forward, decided: Decided) -> Iterable[bytes]:
            environ[_FRONT] = True
            return self._forward(step, decided, environ, start_response)

        return state.http.run(req, state.policy, on_hit, forward)

    def _forward(
        self,
        step: Forward,
        decided: Decided,
        environ: dict[str, Any],
        start_response: StartResponse,
    ) -> Iterable[bytes]:
        request_time = time.time()
        started: list[Any] = []
        written: list[bytes] = []

        def capture(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            started[:] = [status, headers, exc_info]
            return written.append  # the legacy write() callable: buffered in order

        body = self.app(environ, capture)
        head = list(written)
        if not started:  # a generator app calls start_response on its first chunk
            for chunk in body:
                head.append(chunk)
                break
        status_text, headers, exc_info = started
        status = int(status_text.split(" ", 1)[0])
        policy = environ.get(_VIEW_POLICY, step.policy)
        if policy is not step.policy:
            step = dataclasses.replace(step, policy=policy)
        self.state.http.invalidate_unsafe(step, status)

        problem = store_precheck(step.request, status, headers, policy) if step.may_store else "no"
        has_length = any(name.lower() == "content-length" for name, _ in headers)
        if problem is not None or not has_length:  # uncacheable, or streaming: pass on
            decided(None)
            start_response(
                status_text, mark_miss(headers, False, step.fwd, policy=policy), exc_info
            )
            return _Passthrough(head, body)
        try:
            data = b"".join([*head, *body])
        finally:
            close = getattr(body, "close", None)
            if close is not None:
                close()
        sent, store = step.finish(Response(status, headers, data), time.time(), request_time)
        self.state.http.settle(store, decided)
        start_response(status_text, list(sent.headers), exc_info)
        return [sent.body]


class _ViewFront:
    """Serves hits for ``@fcache.cached`` views before Flask handles the request.

    Only where skipping Flask changes nothing a client could see: a GET or HEAD whose
    URL routes to an endpoint whose view function is this extension's cached view
    itself (no other decorator around it), in an app with no ``before_request``,
    ``after_request`` or ``teardown_request`` hooks, URL value preprocessors or request
    or app-context signal receivers (but cachekit's own), and a request without a
    session cookie (Flask might refresh it). It is installed only around Flask's own
    ``wsgi_app``: WSGI middleware under it (installed before ``init_app``) could refuse
    the request or rewrite the environ the key is made from. Anything else, and every
    miss, goes through Flask; a miss hands its lookup to the view (``environ[_PROBED]``),
    so it is never read twice.
    """

    def __init__(self, app: WSGIApp, flask_app: Flask, owner: FlaskCache) -> None:
        self.app = app
        self.flask_app = flask_app
        self.owner = owner
        self._matches: dict[tuple[str, str, str, str, str], str | None] = {}

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        method = environ.get("REQUEST_METHOD")
        if (method == "GET" or method == "HEAD") and self.owner._views:
            found = self._cached_view(environ, method)
            if found is not None:
                state, policy = found
                req = request_from_environ(environ)
                probed = state.http.probe(req, policy)
                step = probed[0]
                if isinstance(step, Hit):
                    response = step.response
                    start_response(_status_line(response.status), list(response.headers))
                    return [response.body]
                environ[_PROBED] = (policy, req, probed)
        return self.app(environ, start_response)

    def _cached_view(
        self, environ: dict[str, Any], method: str
    ) -> tuple[_State, HttpCachePolicy] | None:
        app = self.flask_app
        if (
            any(app.before_request_funcs.values())
            or any(app.after_request_funcs.values())
            or any(app.teardown_request_funcs.values())
            or any(app.url_value_preprocessors.values())
            or request_started.receivers
            or appcontext_pushed.receivers
            or _others_receive(request_finished, _on_request_finished)
            or _others_receive(request_tearing_down, _on_request_tearing_down)
        ):
            return None
        cookies = environ.get("HTTP_COOKIE")
        if cookies and app.config["SESSION_COOKIE_NAME"] in cookies:
            return None
        endpoint = self._endpoint(environ, method)
        if endpoint is None:
            return None
        view = app.view_functions.get(endpoint)
        mark: _ViewMark | None = getattr(view, _VIEW_MARK, None)
        if mark is None or mark.wrapper is not view or mark.owner is not self.owner:
            return None  # not ours, or wrapped by another decorator that must run
        state = self.owner._state(app)
        return state, state.policy_for(mark.overrides)

    def _endpoint(self, environ: dict[str, Any], method: str) -> str | None:
        """The endpoint Flask would dispatch to (None: it would not, or not simply)."""
        key = (
            environ.get("HTTP_HOST", ""),
            environ.get("SERVER_NAME", ""),
            environ.get("SCRIPT_NAME", ""),
            environ.get("PATH_INFO", ""),
            method,
        )
        try:
            return self._matches[key]
        except KeyError:
            pass
        app = self.flask_app
        try:
            adapter = app.create_url_adapter(app.request_class(environ))
            rule, _ = adapter.match(return_rule=True)  # type: ignore[union-attr]
            endpoint: str | None = rule.endpoint
        except Exception:  # no route, a redirect, a bad host...: Flask answers it
            endpoint = None
        if len(self._matches) >= _MATCHES_MAX:
            self._matches.clear()
        self._matches[key] = endpoint
        return endpoint


class FlaskCache:
    """The Flask extension. One instance may serve several apps (state per app)."""

    def __init__(
        self, app: Flask | None = None, *, cache: Cache | None = None, **config: Any
    ) -> None:
        options = {name: value for name, value in config.items() if name not in _DEFAULTS}
        Cache.check_options(options, where="FlaskCache()", also=_DEFAULTS)  # typos fail here
        self._cache = cache
        self._config = {**_DEFAULTS, "default_ttl": _DEFAULT_TTL, **config}
        self._views = 0  # views decorated so far (the view front has work only then)
        # The app given here, for calls outside any app context (a cached function called
        # from a script or a worker). Only a fallback: state lives in app.extensions, and
        # inside an app context the current app is used. Weak: the extension never keeps
        # an app alive.
        self._default_app: weakref.ref[Flask] | None = None
        if app is not None:
            self._default_app = weakref.ref(app)
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        config = app.config
        for name, default in self._config.items():
            config.setdefault("CACHEKIT_" + name.upper(), default)
        cache = self._cache
        # every CACHEKIT_* key is checked against the options table (a typo is an error),
        # below the URL's query string in precedence (as for CACHEKIT_* environment variables)
        settings = Cache.check_options(
            config["CACHEKIT_OPTIONS"], where="app.config['CACHEKIT_OPTIONS']"
        )
        settings.update(
            (key[len("CACHEKIT_") :].lower(), value)
            for key, value in config.items()
            if key.startswith("CACHEKIT_") and key not in _OWN_KEYS
        )
        if cache is None:
            cache = Cache.from_settings(
                settings, config["CACHEKIT_URL"], where="app.config",
                spelling="CACHEKIT_{NAME}", also=_OWN_KEYS,
            )  # fmt: skip
            default_ttl = cache.default_ttl
            defaults = dict(cache.options)
        else:
            checked = Cache.check_options(
                settings, where="app.config", spelling="CACHEKIT_{NAME}", also=_OWN_KEYS
            )
            default_ttl = checked["default_ttl"]
            defaults = {**cache.options, **checked}
        # CACHEKIT_IGNORE_COOKIES / CACHEKIT_VARY_COOKIES unless CACHEKIT_HTTP sets them
        policy = make_policy(None, default_ttl, defaults=defaults, **config["CACHEKIT_HTTP"])
        state = _State(cache, SyncHttpCache(cache, policy, lock=config["CACHEKIT_LOCK"]), policy)
        app.extensions[EXTENSION] = state
        # A cached view's miss is stored once Flask has finished the response (after the
        # after_request hooks and the session); teardown settles it if that never came.
        request_finished.connect(_on_request_finished, app)
        request_tearing_down.connect(_on_request_tearing_down, app)
        from .ratelimit import init_rate_limits  # CACHEKIT_RATELIMIT (ratelimit.py)

        init_rate_limits(app, self)
        innermost = _is_flasks_own(app)
        if config["CACHEKIT_CACHE_ALL"]:
            if not innermost:
                raise ConfigurationError(
                    "CACHEKIT_CACHE_ALL: app.wsgi_app is already wrapped by WSGI middleware; "
                    "call init_app before installing middleware, so that the middleware "
                    "runs on hits too and keys are made from the request Flask sees"
                )
            app.wsgi_app = _FrontCache(app.wsgi_app, state)  # type: ignore[method-assign]
        elif innermost:  # else hits are answered in the view, after the middleware
            app.wsgi_app = _ViewFront(app.wsgi_app, app, self)  # type: ignore[method-assign]

    # -- state ------------------------------------------------------------------------
    def _state(self, app: Flask | None = None) -> _State:
        """The given app's state, else the current app's, else (outside any app context)
        the app this FlaskCache was constructed with."""
        if app is None:
            if has_app_context():
                app = current_app._get_current_object()  # type: ignore[attr-defined]
            elif self._default_app is not None:
                app = self._default_app()
            if app is None:
                raise RuntimeError(
                    "FlaskCache: no application: call inside an app context "
                    "(with app.app_context(): ...), or construct FlaskCache(app)"
                )
        try:
            state: _State = app.extensions[EXTENSION]
        except KeyError:
            raise RuntimeError("FlaskCache.init_app(app) was not called for this app") from None
        return state

    @property
    def cache(self) -> Cache:
        """The current app's :class:`cachekit.Cache`."""
        return self._state().cache

    def http_cache(self, app: Flask | None = None) -> SyncHttpCache:
        """The current (or given) app's response cache driver."""
        return self._state(app).http

    # -- decorators -------------------------------------------------------------------
    def cached(self, ttl: Any = DEFAULT, **options: Any) -> Callable[[F], F]:
        """Cache a view's response, or a plain function's result (decided per call, see
        the module docs). ``ttl``: for a view, the lifetime of responses that state no
        freshness (None: only those that do); for a function, the entry's TTL. View
        options: :class:`~cachekit.http.HttpCachePolicy` fields; function options:
        ``key``, ``tags``, ``cache_none``, ``condition``, ``unless``."""
        view_options = {k: v for k, v in options.items() if k not in _MEMO_OPTIONS}
        memo_options = {k: v for k, v in options.items() if k in _MEMO_OPTIONS}

        def decorate(func: F) -> F:
            as_view = self._view(func, ttl, view_options)
            as_function = self._memo(func, ttl, memo_options)

            @functools.wraps(func)
            def wrapper(*args: Any, **kwargs: Any) -> Any:
                if _dispatching(wrapper):
                    return as_view(*args, **kwargs)
                return as_function(*args, **kwargs)

            wrapper.invalidate = as_function.invalidate  # type: ignore[attr-defined]
            self._mark(wrapper, as_view)
            return wrapper  # type: ignore[return-value]

        return decorate

    def rate_limit(self, rate: Any, **options: Any) -> Callable[[F], F]:
        """A view decorator limiting requests to ``rate`` (429 when refused; options and
        ``CACHEKIT_RATELIMIT``: :mod:`cachekit.integrations.flask.ratelimit`)."""
        from .ratelimit import view_rate_limit

        return view_rate_limit(self, rate, **options)

    def cached_view(self, ttl: Any = DEFAULT, **options: Any) -> Callable[[F], F]:
        """Cache a view's HTTP response (always; see :meth:`cached`)."""

        def decorate(func: F) -> F:
            view = self._view(func, ttl, options)
            wrapper = functools.wraps(func)(view)
            self._mark(wrapper, view)
            return wrapper  # type: ignore[return-value]

        return decorate

    def _mark(self, wrapper: Callable[..., Any], view: Callable[..., Any]) -> None:
        overrides: dict[str, Any] = view._cachekit_overrides  # type: ignore[attr-defined]
        setattr(wrapper, _VIEW_MARK, _ViewMark(self, wrapper, overrides))
        self._views += 1

    def memoize(self, ttl: Any = DEFAULT, **options: Any) -> Callable[[F], F]:
        """Cache a function's result in the current app's cache (its ``cached``)."""

        def decorate(func: F) -> F:
            return functools.wraps(func)(self._memo(func, ttl, options))  # type: ignore[return-value]

        return decorate

    def _view(
        self, func: Callable[..., Any], ttl: Any, options: dict[str, Any]
    ) -> Callable[..., Any]:
        unknown = set(options) - _POLICY_FIELDS
        if unknown:
            raise TypeError(f"unknown view cache option(s): {', '.join(sorted(unknown))}")
        overrides = dict(options)
        if ttl is not DEFAULT:
            overrides["default_ttl"] = ttl

        def view(*args: Any, **kwargs: Any) -> Any:
            state = self._state()
            policy = state.policy_for(overrides)
            environ = request.environ
            if environ.get(_FRONT):  # the app-wide cache handles it, with this view's policy
                environ[_VIEW_POLICY] = policy
                return func(*args, **kwargs)
            req: Request | None = None
            probed: Probe | None = None
            handed = environ.pop(_PROBED, None)  # the view front read it already
            if handed is not None and handed[0] is policy:
                _, req, probed = handed

            def on_hit(response: Response) -> FlaskResponse:
                return _to_flask(response)

            def forward(step: Forward, decided: Decided) -> FlaskResponse:
                request_time = time.time()
                try:
                    response = current_app.make_response(func(*args, **kwargs))
                except BaseException:
                    decided(None)
                    raise
                return _complete(state, step, response, decided, request_time)

            if req is None:
                req = request_from_environ(environ)
            # deferred: a miss is decided in _on_request_finished, on the final response
            return state.http.run(req, policy, on_hit, forward, probed, deferred=True)

        view._cachekit_overrides = overrides  # type: ignore[attr-defined]
        return view

    def _memo(self, func: Callable[..., Any], ttl: Any, options: dict[str, Any]) -> Any:
        made: dict[int, tuple[Cache, Callable[..., Any]]] = {}
        lock = threading.Lock()

        def decorated() -> Any:
            cache = self.cache
            found = made.get(id(cache))
            if found is None or found[0] is not cache:
                with lock:
                    found = made[id(cache)] = (cache, cache.cached(ttl=ttl, **options)(func))
            return found[1]

        @functools.wraps(func)
        def call(*args: Any, **kwargs: Any) -> Any:
            return decorated()(*args, **kwargs)

        def invalidate(*args: Any, **kwargs: Any) -> Any:
            return decorated().invalidate(*args, **kwargs)

        call.invalidate = invalidate  # type: ignore[attr-defined]
        return call

    # -- invalidation -----------------------------------------------------------------
    def invalidate_url(self, url: str, app: Flask | None = None) -> bool:
        """Drop the stored response for an absolute URL (``https://host/path?query``)."""
        return self._state(app).http.invalidate_url(url)

    def invalidate_path(
        self, pattern: str, host: str | None = None, app: Flask | None = None
    ) -> int:
        """Drop stored responses whose path matches ``pattern`` (``*`` matches anything,
        ``/`` and queries included; any host unless ``host`` is given); the number dropped."""
        return self._state(app).http.invalidate_path(pattern, host)

    def invalidate_tags(self, *tags: str, app: Flask | None = None) -> int:
        """Drop stored responses whose ``Cache-Tag`` header named any of ``tags``."""
        return self._state(app).http.invalidate_tags(*tags)


def _dispatching(wrapper: Callable[..., Any]) -> bool:
    """Whether this call is Flask dispatching the current request to ``wrapper``."""
    if not has_request_context():
        return False
    ctx = request_ctx._get_current_object()  # type: ignore[attr-defined]
    endpoint = ctx.request.endpoint
    if endpoint is None:
        return False
    view: Any = ctx.app.view_functions.get(endpoint)
    while view is not None:
        if view is wrapper:
            return True
        view = getattr(view, "__wrapped__", None)
    return False


def _session_use() -> tuple[bool, bool]:
    """Whether the view read, and changed, the session (without marking it read)."""
    ctx = request_ctx._get_current_object()  # type: ignore[attr-defined]
    # Flask >= 3.1 marks the session read when the `session` proxy is touched: peek.
    current = ctx._session if hasattr(ctx, "_session") else ctx.session
    if current is None or current_app.session_interface.is_null_session(current):
        return False, False
    return bool(current.accessed), bool(current.modified)


def _complete(
    state: _State,
    step: Forward,
    response: FlaskResponse,
    decided: Decided,
    request_time: float,
) -> FlaskResponse:
    """A view's response, kept to be stored once the final response is known
    (:func:`_on_request_finished`); the response to hand to Flask."""
    policy = step.policy
    headers = list(response.headers.items())
    accessed, modified = _session_use()
    if accessed and not any(
        name.lower() == "vary" and "cookie" in value.lower() for name, value in headers
    ):
        # The view (or a before_request hook) read the session: its output depends on
        # the cookie. Flask adds the header after the view; key on it now.
        headers.append(("Vary", "Cookie"))
    if response.is_streamed or modified:
        decided(None)  # streaming, or about to set a session cookie: never shared
        response.headers = Headers(
            mark_miss(response.headers.items(), False, step.fwd, policy=policy)
        )
        return response
    view = Response(response.status_code, headers, response.get_data())
    earlier: _Pending | None = request.environ.get(_PENDING)
    if earlier is not None:  # the view ran twice in one request: only the last one counts
        earlier.abandon()
    request.environ[_PENDING] = _Pending(state, step, decided, response, view, request_time)
    return response


@dataclass
class _Pending:
    """A cached view's miss, waiting for the final response (after the after_request
    hooks and the session) to say whether, how long and by what it may be shared.

    The entry is the *view's* response (``view``): a hit is handed to Flask as if the
    view had returned it, so the hooks run on it as they ran on this miss (a hook that
    adds a header or compresses the body does so once). What the hooks say about
    caching is the final response's: Cache-Control (``private``, ``max-age``...),
    Expires, Vary and the tag header are taken from it, and a response that sets a
    cookie or that a hook replaced is not stored.
    """

    state: _State
    step: Forward
    decided: Decided
    response: FlaskResponse  # the object the view returned (hooks change it in place)
    view: Response
    request_time: float

    def finish(self, final: FlaskResponse) -> None:
        step, policy, store = self.step, self.step.policy, None
        final_headers = list(final.headers.items())
        try:
            # Another object is a hook's replacement or an error handler's response
            # (a hook raised): not what the view made.
            same = final is self.response and final.status_code == self.view.status
            if (
                same
                and store_precheck(step.request, final.status_code, final_headers, policy) is None
            ):
                said = caching_headers_from(final_headers, self.view.headers, policy)
                view = dataclasses.replace(self.view, headers=said)
                _, store = step.finish(view, time.time(), self.request_time)
            if store is not None:
                self.state.http.store(store)
        except Exception:  # a cache problem never fails the request
            logger.exception("storing a Flask response failed")
            store = None
        self.decided(None if store is None else store.entry)
        etag = None if store is None else store.entry.etag
        final.headers = Headers(
            mark_miss(final_headers, store is not None, step.fwd, policy=policy, etag=etag)
        )

    def abandon(self) -> None:
        self.decided(None)


def _on_request_finished(sender: Flask, response: FlaskResponse, **extra: Any) -> None:
    """Flask's ``request_finished``: the final response (after every after_request hook
    and the session were applied) decides whether the pending miss is stored."""
    pending: _Pending | None = request.environ.pop(_PENDING, None)
    if pending is not None:
        pending.finish(response)


def _on_request_tearing_down(sender: Flask, **extra: Any) -> None:
    """The request ended without a ``request_finished`` for it (an exception in a hook or
    an error handler): release the waiting requests, store nothing."""
    pending: _Pending | None = request.environ.pop(_PENDING, None)
    if pending is not None:
        pending.abandon()


def _others_receive(signal: Any, ours: Callable[..., Any]) -> bool:
    """Whether ``signal`` has receivers other than cachekit's ``ours``."""
    receivers = signal.receivers
    return len(receivers) > (1 if id(ours) in receivers else 0)


def _is_flasks_own(app: Flask) -> bool:
    """Whether ``app.wsgi_app`` is still Flask's own (no WSGI middleware installed)."""
    wsgi_app: Any = app.wsgi_app
    return getattr(wsgi_app, "__func__", None) is Flask.wsgi_app and (
        getattr(wsgi_app, "__self__", None) is app
    )


# server-side sessions (app.session_interface): their own module
from .sessions import CachekitSessionInterface as CachekitSessionInterface  # noqa: E402
