"""Cookie sessions for the pages: who is signed in, and role checks per blueprint."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import g, redirect, request, session, url_for

from ..errors import Forbidden
from ..extensions import db
from ..models import Role, User


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
