"""Server-side sessions: the pure rules (ids, timeouts, what a save writes, cookies).

No backend and no event loop here: the stores (``_async_store.py`` and its generated twin)
only carry out what these functions decide.

A session is one Redis hash, ``#{namespace}session:{<id>}`` (outside the namespace's
patterns, so ``cache.clear()`` does not log everybody out; ``{<id>}`` is the Cluster hash
tag). Header fields ``#c`` (created) and ``#l`` (last activity) say the session exists;
each value is a field ``=<name>`` holding the value's JSON (orjson).

Why fields and not a versioned blob: a request saves only the fields it changed (``HSET``)
or removed (``HDEL``), so two concurrent requests writing different names both land, with
no retry loop (a compare-and-set would have to re-run the request's logic, which a
middleware cannot do). Two requests writing the *same* name: the last save wins, as with
any store. Every write is one Lua script that first checks the header: a session deleted
(logout) or expired while a request was in flight is never brought back by its save.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from ..exceptions import ConfigurationError, InvalidArgumentError

__all__ = [
    "DELETE_SCRIPT",
    "GRACE_SCRIPT",
    "LOAD_SCRIPT",
    "SAVE_SCRIPT",
    "CookieOptions",
    "SaveOutcome",
    "SavePlan",
    "Session",
    "SessionConfig",
    "decode_fields",
    "encode_value",
    "is_session_id",
    "new_session_id",
    "plan_save",
]

CREATED, LAST, GRACE = "#c", "#l", "#g"  # header fields
DATA = "="  # in front of every value's field name
ID_BYTES = 32  # 256 bits from secrets: 43 URL-safe characters
_ID = re.compile(r"[A-Za-z0-9_-]{43}")


def new_session_id() -> str:
    """A fresh session id: 256 random bits from :mod:`secrets`."""
    return secrets.token_urlsafe(ID_BYTES)


def is_session_id(value: object) -> bool:
    """Whether ``value`` has the shape of an id this store makes (anything else the client
    sends is ignored without asking the backend)."""
    return isinstance(value, str) and _ID.fullmatch(value) is not None


@dataclass(frozen=True)
class SessionConfig:
    """How long sessions live (seconds). ``idle_timeout``: since the last request that
    used it; ``absolute_timeout``: since it was created (regenerate() keeps that time, so it
    cannot extend a session). The backend's expiry is the smaller of the two remaining.
    A read refreshes the idle expiry only once ``touch_after`` has passed since the last
    one (default: a tenth of ``idle_timeout``, at most 60 s): a read-only request costs no
    write, and a session may expire up to that much *earlier* than ``idle_timeout``, never
    later. ``regenerate_grace``: how long an old id stays readable (read-only) after
    regenerate(), for requests already in flight; 0: dead at once."""

    idle_timeout: float = 2 * 3600.0
    absolute_timeout: float = 7 * 86400.0
    touch_after: float | None = None
    regenerate_grace: float = 0.0

    def __post_init__(self) -> None:
        for name in ("idle_timeout", "absolute_timeout"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
                raise ConfigurationError(f"{name} must be a positive number, not {value!r}")
        for name in ("touch_after", "regenerate_grace"):
            value = getattr(self, name)
            if value is None and name == "touch_after":
                continue
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise ConfigurationError(f"{name} must be a number >= 0, not {value!r}")

    @property
    def touch_interval(self) -> float:
        if self.touch_after is not None:
            return float(self.touch_after)
        return min(60.0, self.idle_timeout / 10)

    def expired(self, created: float, last: float, now: float) -> bool:
        return now - last >= self.idle_timeout or now - created >= self.absolute_timeout

    def ttl(self, created: float, now: float) -> float:
        """The backend expiry after activity at ``now`` (<= 0: already past the absolute)."""
        return min(self.idle_timeout, created + self.absolute_timeout - now)

    def args(self, now: float) -> list[str]:
        return [repr(now), repr(float(self.idle_timeout)), repr(float(self.absolute_timeout))]


def encode_value(name: object, value: Any) -> bytes:
    """One value's stored form (JSON, as Starlette's cookie session); a clear error for
    what JSON cannot hold."""
    if not isinstance(name, str):
        raise InvalidArgumentError(f"session keys must be strings, not {type(name).__qualname__}")
    try:
        name.encode()
    except UnicodeEncodeError as exc:
        raise InvalidArgumentError(f"session key {name!r} is not valid Unicode") from exc
    try:
        return orjson.dumps(value)
    except TypeError as exc:
        raise InvalidArgumentError(
            f"session value {name!r} is not JSON-serializable ({type(value).__qualname__}): "
            "store str, int, float, bool, None, lists and dicts of them"
        ) from exc


def decode_fields(fields: Mapping[Any, Any]) -> tuple[float, dict[str, bytes], bool] | None:
    """(created, {name: encoded value}, read-only) from a stored hash, or None when it is
    not a session (no header, or a value that is not JSON)."""
    created: float | None = None
    values: dict[str, bytes] = {}
    read_only = False
    for raw_name, raw in fields.items():
        name = raw_name.decode() if isinstance(raw_name, bytes) else str(raw_name)
        data = raw if isinstance(raw, bytes) else str(raw).encode()
        if name == CREATED:
            try:
                created = float(data)
            except ValueError:
                return None
        elif name == GRACE:
            read_only = True
        elif name.startswith(DATA):
            values[name[len(DATA) :]] = data
    if created is None:
        return None
    return created, values, read_only


class Session(dict[str, Any]):
    """A request's session: a dict (``request.session``), JSON values.

    What a save writes is found by comparing each value's JSON with what was loaded, so a
    change inside a nested list or dict is saved too. ``clear()`` is logout: the session is
    deleted server-side (anything stored after it goes into a new session with a new id).
    ``regenerate()`` (call it on login and any privilege change): the data moves to a new
    id and the old id is dead at once (or read-only for ``regenerate_grace`` seconds).
    """

    def __init__(
        self,
        session_id: str | None = None,
        loaded: Mapping[str, bytes] | None = None,
        *,
        created: float | None = None,
        had_cookie: bool = False,
        read_only: bool = False,
        unavailable: bool = False,
    ) -> None:
        loaded = dict(loaded or {})
        super().__init__((name, orjson.loads(data)) for name, data in loaded.items())
        self._id = session_id
        self._loaded = loaded
        self._created = created
        self._had_cookie = had_cookie
        self._read_only = read_only
        self._unavailable = unavailable
        self._cleared = False
        self._regenerate = False

    @property
    def id(self) -> str | None:
        """The server-side id (None: nothing stored yet; a save makes one)."""
        return self._id

    @property
    def had_cookie(self) -> bool:
        """Whether the request carried a session cookie (a good one or not)."""
        return self._had_cookie

    @property
    def is_new(self) -> bool:
        return self._id is None

    @property
    def read_only(self) -> bool:
        """An old id within its regenerate grace, or a session the backend could not load:
        readable, never saved."""
        return self._read_only or self._unavailable

    @property
    def unavailable(self) -> bool:
        """The backend failed when loading: the session reads as empty, nothing is saved and
        the cookie is left alone (the user is not logged out for good by an outage)."""
        return self._unavailable

    def regenerate(self) -> None:
        """A new id at the next save, the same data; the old id stops working."""
        self._regenerate = True

    def clear(self) -> None:
        """Empty the session and delete it server-side at the next save (logout)."""
        super().clear()
        self._cleared = True

    def __setitem__(self, name: str, value: Any) -> None:
        encode_value(name, value)  # a clear error now, not at the end of the request
        super().__setitem__(name, value)

    def _saved(self, plan: SavePlan, new_id: str | None, now: float) -> None:
        """After a save that wrote ``plan``: the session is what is stored (saving again
        writes only later changes)."""
        if plan.create:
            self._loaded = dict(plan.sets)
            self._created = now if plan.created is None else plan.created
        elif plan.drop is not None:
            self._loaded = {}
        else:
            loaded = {**self._loaded, **plan.sets}
            for name in plan.deletes:
                loaded.pop(name, None)
            self._loaded = loaded
        if plan.create or plan.drop is not None:
            self._id = new_id
        self._cleared = self._regenerate = False

    def __repr__(self) -> str:
        return f"<Session {'new' if self._id is None else self._id[:6] + '...'} {len(self)} keys>"


@dataclass
class SavePlan:
    """What one save does (at most one round trip): ``drop`` an old id (or keep it
    read-only for the grace when ``grace``), ``create`` a new session with ``sets``, or
    ``update`` the existing one (``sets`` and ``deletes``, only what changed)."""

    drop: str | None = None
    grace: bool = False
    create: bool = False
    update: str | None = None
    sets: dict[str, bytes] = field(default_factory=dict)
    deletes: list[str] = field(default_factory=list)
    created: float | None = None  # the creation time a regenerated session keeps
    clear_cookie: bool = False

    @property
    def empty(self) -> bool:
        return self.drop is None and not self.create and self.update is None


@dataclass(frozen=True)
class SaveOutcome:
    """What a save did, for the adapter: ``set_id`` to send in a new cookie, or
    ``clear_cookie``; ``lost``: the session had been deleted or had expired meanwhile, so
    this request's changes were not saved (and did not bring it back)."""

    set_id: str | None = None
    clear_cookie: bool = False
    lost: bool = False
    written: bool = False


NOTHING = SaveOutcome()


def plan_save(session: Session, grace: float) -> SavePlan:
    """Decide what saving ``session`` writes (raises InvalidArgumentError for a value JSON
    cannot hold: nothing is written then)."""
    if session.read_only:
        return SavePlan()
    encoded = {name: encode_value(name, value) for name, value in session.items()}
    old = session.id
    plan = SavePlan()
    if old is not None and (session._cleared or not encoded or session._regenerate):
        plan.drop = old
        plan.grace = session._regenerate and not session._cleared and grace > 0
        if session._regenerate and not session._cleared:
            plan.created = session._created
    elif old is not None:
        loaded = session._loaded
        plan.sets = {n: data for n, data in encoded.items() if loaded.get(n) != data}
        plan.deletes = [n for n in loaded if n not in encoded]
        if plan.sets or plan.deletes:
            plan.update = old
        return plan
    if encoded:
        plan.create = True
        plan.sets = encoded
    elif old is not None or session._had_cookie:
        plan.clear_cookie = True
    return plan


def save_args(config: SessionConfig, now: float, plan: SavePlan) -> list[Any]:
    """SAVE_SCRIPT's arguments for ``plan`` (create or update)."""
    created = "" if plan.created is None else repr(plan.created)
    args: list[Any] = [*config.args(now), "1" if plan.create else "0", created, len(plan.sets)]
    for name, data in plan.sets.items():
        args += [DATA + name, data]
    args += [DATA + name for name in plan.deletes]
    return args


# -- Redis scripts (KEYS[1]: the session's hash). The in-process store does the same. ------

# ARGV: now, idle, absolute, touch_after. The hash, or false (none, not a session, expired:
# deleted). Refreshes the idle expiry only when touch_after has passed since the last.
LOAD_SCRIPT = """
local h = redis.call('HGETALL', KEYS[1])
if #h == 0 then return false end
local created, last, grace
for i = 1, #h, 2 do
  local f = h[i]
  if f == '#c' then created = tonumber(h[i + 1])
  elseif f == '#l' then last = tonumber(h[i + 1])
  elseif f == '#g' then grace = true end
end
if not created or not last then return false end
local now, idle, absolute = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
if now - last >= idle or now - created >= absolute then
  redis.call('DEL', KEYS[1])
  return false
end
if not grace and now - last >= tonumber(ARGV[4]) then
  redis.call('HSET', KEYS[1], '#l', ARGV[1])
  local ttl = math.min(idle, created + absolute - now)
  redis.call('PEXPIRE', KEYS[1], math.max(1, math.floor(ttl * 1000)))
end
return h
"""

# ARGV: now, idle, absolute, create (1/0), created ('' = now), nsets, name, value, ...,
# then the names to delete. 1 written; 0 not (past the absolute timeout; update: the
# session is gone, expired, or an old id in its grace: nothing is resurrected).
SAVE_SCRIPT = """
local key = KEYS[1]
local now, idle, absolute = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local created
if ARGV[4] == '1' then
  -- a fresh 256-bit id: nothing is there (DEL keeps a batch sent twice, after a
  -- SCRIPT FLUSH, exact)
  redis.call('DEL', key)
  local since = ARGV[1]
  if ARGV[5] ~= '' then since = ARGV[5] end
  created = tonumber(since)
  redis.call('HSET', key, '#c', since)
else
  local h = redis.call('HMGET', key, '#c', '#l', '#g')
  if not h[1] or not h[2] or h[3] then return 0 end
  created = tonumber(h[1])
  if now - tonumber(h[2]) >= idle or now - created >= absolute then
    redis.call('DEL', key)
    return 0
  end
end
local ttl = math.min(idle, created + absolute - now)
if ttl <= 0 then
  redis.call('DEL', key)
  return 0
end
-- one HSET of the changed fields and the activity time (in slices: unpack() is bounded)
local fields = {'#l', ARGV[1]}
local last = 6 + 2 * tonumber(ARGV[6])
for i = 7, last do
  fields[#fields + 1] = ARGV[i]
  if #fields >= 2000 then
    redis.call('HSET', key, unpack(fields))
    fields = {}
  end
end
if #fields > 0 then redis.call('HSET', key, unpack(fields)) end
for j = last + 1, #ARGV do redis.call('HDEL', key, ARGV[j]) end
redis.call('PEXPIRE', key, math.max(1, math.floor(ttl * 1000)))
return 1
"""

DELETE_SCRIPT = "return redis.call('DEL', KEYS[1])"

# ARGV: grace (ms). An old id after regenerate(): read-only, gone after the grace.
GRACE_SCRIPT = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], '#g', '1')
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return 1
"""


# -- cookies ---------------------------------------------------------------------------

_SAMESITE = {"lax": "Lax", "strict": "Strict", "none": "None"}


@dataclass(frozen=True)
class CookieOptions:
    """The session cookie. Safe defaults: ``HttpOnly``, ``Secure`` (browsers then send it
    over HTTPS only: pass ``secure=False`` for plain-http development), ``SameSite=Lax``.
    ``max_age`` None: a browser-session cookie (the server still enforces the timeouts)."""

    name: str = "session"
    path: str = "/"
    domain: str | None = None
    secure: bool = True
    httponly: bool = True
    samesite: str | None = "lax"
    max_age: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not re.fullmatch(
            r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+", self.name
        ):
            raise ConfigurationError(f"bad session cookie name {self.name!r}")
        if self.samesite is not None and self.samesite.lower() not in _SAMESITE:
            raise ConfigurationError(
                f"samesite must be lax, strict, none or None, not {self.samesite!r}"
            )
        if self.samesite is not None and self.samesite.lower() == "none" and not self.secure:
            raise ConfigurationError("samesite='none' needs secure=True (browsers refuse it)")

    def header(self, value: str, max_age: int | None = -1) -> str:
        """A ``Set-Cookie`` value carrying ``value`` (``max_age`` -1: the configured one)."""
        age = self.max_age if max_age == -1 else max_age
        parts = [f"{self.name}={value}", f"Path={self.path}"]
        if self.domain:
            parts.append(f"Domain={self.domain}")
        if age is not None:
            parts.append(f"Max-Age={age}")
            if age == 0:
                parts.append("Expires=Thu, 01 Jan 1970 00:00:00 GMT")
        if self.secure:
            parts.append("Secure")
        if self.httponly:
            parts.append("HttpOnly")
        if self.samesite is not None:
            parts.append(f"SameSite={_SAMESITE[self.samesite.lower()]}")
        return "; ".join(parts)

    def expired_header(self) -> str:
        """A ``Set-Cookie`` value that removes the cookie."""
        return self.header("null", 0)
