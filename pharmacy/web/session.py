"""Cookie sessions for the pages: who is signed in, and role checks per blueprint."""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable
from typing import Any

from flask import current_app, g, redirect, request, session, url_for
from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer
from redis.exceptions import RedisError
from werkzeug.wrappers import Response

from ..errors import Forbidden
from ..extensions import db, get_redis
from ..models import Role, User
from ..rate_limits import PENDING_ACCOUNT_KEY, count_failure

logger = logging.getLogger(__name__)


# Pharmacists and admins work on shared computers: their sessions end after 30 minutes
# without a request; everyone's after 14 hours, however busy.
STAFF_IDLE_S = 30 * 60
IDLE_S = 12 * 3600
MAX_AGE_S = 14 * 3600
_SEEN_EVERY_S = 60  # the cookie is rewritten at most once a minute to record activity
_REVOKED = "dispensary:session-ended:{}"


def load_session_user() -> None:
    g.user = None
    uid, gen = session.get("uid"), session.get("gen")
    if not isinstance(uid, int):
        return
    user = db.session.get(User, uid)
    if user is None or not user.is_active or user.token_generation != gen:
        session.clear()
        return
    now = int(time.time())
    started, seen = session.get("t0"), session.get("seen")
    idle = STAFF_IDLE_S if user.role in (Role.PHARMACIST, Role.ADMIN) else IDLE_S
    if (not isinstance(started, int) or not isinstance(seen, int)
            or now - started > MAX_AGE_S or now - seen > idle or _ended(session.get("sid"))):
        session.clear()
        return
    if now - seen >= _SEEN_EVERY_S:
        session["seen"] = now
    g.user = user


def login_user(user: User) -> None:
    # A fresh session on sign-in: nothing set before login survives (no session fixation).
    session.clear()
    now = int(time.time())
    session["uid"] = user.id
    session["gen"] = user.token_generation
    session["sid"] = secrets.token_urlsafe(16)
    session["t0"] = session["seen"] = now
    session.permanent = False


# A browser someone signed in from keeps a signed note of it (90 days): a lock put on the
# account by strangers' wrong passwords does not keep its owner out on that browser.
DEVICE_COOKIE = "device"
DEVICE_MAX_AGE_S = 90 * 86400
_DEVICE_SALT = "dispensary.device.v1"


def _device_serializer() -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(str(current_app.config["SECRET_KEY"]), salt=_DEVICE_SALT)


# A remembered browser that keeps failing is no longer spared the lock.
DEVICE_MAX_FAILURES = 10
_DEVICE_FAILURES = "dispensary:device-failures:{}"


def _device() -> dict[str, Any] | None:
    raw = request.cookies.get(DEVICE_COOKIE)
    if not raw:
        return None
    try:
        value = _device_serializer().loads(raw, max_age=DEVICE_MAX_AGE_S)
    except (BadSignature, SignatureExpired):
        return None
    if not (isinstance(value, dict) and isinstance(value.get("u"), int)
            and isinstance(value.get("g"), int) and isinstance(value.get("d"), str)):
        return None
    return value


def trusted_device() -> tuple[int, int] | None:
    """(user id, token generation) this browser's genuine device cookie was issued for,
    unless the browser has failed too often lately."""
    device = _device()
    if device is None:
        return None
    try:
        failures = int(get_redis().get(_DEVICE_FAILURES.format(device["d"])) or 0)
    except RedisError:
        failures = 0
    if failures >= DEVICE_MAX_FAILURES:
        return None
    return device["u"], device["g"]


def note_device_failure() -> None:
    """A failed sign-in from a remembered browser (counted for the lockout period)."""
    device = _device()
    if device is not None:
        count_failure(_DEVICE_FAILURES.format(device["d"]))


def remember_device(response: Response, user: User) -> Response:
    """Note this browser as the user's (for their current password only)."""
    value = {"u": user.id, "g": user.token_generation, "d": secrets.token_urlsafe(12)}
    response.set_cookie(DEVICE_COOKIE, _device_serializer().dumps(value),
                        max_age=DEVICE_MAX_AGE_S, httponly=True, samesite="Lax",
                        secure=bool(current_app.config.get("SESSION_COOKIE_SECURE")))
    return response


def _ended(sid: object) -> bool:
    """Whether this session was signed out (a copy of its cookie is then worth nothing).
    Without Redis a signed-out cookie stays valid until its idle or age limit."""
    if not isinstance(sid, str):
        return True
    try:
        return bool(get_redis().exists(_REVOKED.format(sid)))
    except RedisError:
        logger.warning("could not check for a signed-out session (Redis unavailable)")
        return False


# A sign-in waiting for its second factor: the password was right, nobody is signed in yet.
_PENDING = "pending_2fa"
PENDING_MAX_AGE_S = 300


def begin_second_factor(user: User, *, account_key: str, next_url: str | None) -> None:
    session.clear()  # nothing from before survives, as at a full sign-in
    session[_PENDING] = {"uid": user.id, "gen": user.token_generation, "at": int(time.time()),
                         "next": next_url}
    session[PENDING_ACCOUNT_KEY] = account_key  # the per-account rate limit of the code step


def pending_second_factor() -> dict[str, Any] | None:
    """The waiting sign-in, if one is there and recent; else None (and it is forgotten)."""
    pending = session.get(_PENDING)
    if not isinstance(pending, dict):
        return None
    if not isinstance(pending.get("uid"), int) or not isinstance(pending.get("at"), int) or (
            time.time() - pending["at"] > PENDING_MAX_AGE_S):
        session.clear()
        return None
    return pending


def logout_user() -> None:
    """End this session for good: the cookie is cleared and its id remembered as signed out
    until it would have expired anyway."""
    sid = session.get("sid")
    if isinstance(sid, str):
        try:
            get_redis().set(_REVOKED.format(sid), "1", ex=MAX_AGE_S)
        except RedisError:
            logger.warning("could not record a sign-out (Redis unavailable)")
    session.clear()


def require_role(*roles: Role) -> Callable[[], Any]:
    """``before_request`` hook for a role's blueprint: sign-in page, or 403 for other roles."""

    def _check() -> Any:
        user: User | None = g.get("user")
        if user is None:
            return redirect(url_for("auth.login", next=request.full_path.rstrip("?")))
        if user.role not in roles:
            raise Forbidden("This page is not for your role.")
        return None

    return _check
