"""Cookie sessions for the pages: who is signed in, and role checks per blueprint."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from flask import g, redirect, request, session, url_for

from ..errors import Forbidden
from ..extensions import db
from ..models import Role, User
from ..rate_limits import PENDING_ACCOUNT_KEY


def load_session_user() -> None:
    g.user = None
    uid, gen = session.get("uid"), session.get("gen")
    if not isinstance(uid, int):
        return
    user = db.session.get(User, uid)
    if user is None or not user.is_active or user.token_generation != gen:
        session.clear()
        return
    g.user = user


def login_user(user: User) -> None:
    # A fresh session on sign-in: nothing set before login survives (no session fixation).
    session.clear()
    session["uid"] = user.id
    session["gen"] = user.token_generation
    session.permanent = False


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
