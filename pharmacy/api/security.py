"""Bearer-token authentication for API blueprints, applied once per blueprint."""

from __future__ import annotations

from collections.abc import Callable

from flask import current_app, g, request

from ..errors import Forbidden, Unauthorised
from ..extensions import db
from ..models import Role, User
from ..services import auth

BEARER_DOC = {"security": [{"bearerAuth": []}]}


def current_api_user() -> User:
    user: User | None = g.get("api_user")
    if user is None:  # pragma: no cover - the before_request hook guarantees it
        raise Unauthorised("Authentication required.")
    return user


def require_roles(*roles: Role) -> Callable[[], None]:
    """A ``before_request`` hook: a valid bearer token of one of ``roles`` (any if empty)."""

    def _check() -> None:
        if request.method == "OPTIONS":
            return
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorised("Send 'Authorization: Bearer <access_token>'.")
        user = auth.user_for_token(
            db.session, current_app.config["SECRET_KEY"], token.strip(),
            max_age_s=current_app.config["API_TOKEN_TTL_S"],
        )
        if user is None:
            raise Unauthorised("The access token is invalid or has expired.")
        if roles and user.role not in roles:
            raise Forbidden("Your role may not use this resource.")
        g.api_user = user

    return _check


def require_roles_per_view(rules: dict[tuple[str, str], tuple[Role, ...]]) -> Callable[[], None]:
    """A ``before_request`` hook: per (view, method) role rules, checked before the body is.

    flask-smorest parses and validates the body before the view runs; a role check inside
    the view would tell a caller who may not use it that their body was invalid (422)
    instead of refusing them (403). Rules are keyed by the view class name.
    """

    def _check() -> None:
        view = (request.endpoint or "").rpartition(".")[2]
        roles = rules.get((view, request.method))
        if roles is None:
            return
        user = g.get("api_user")
        if user is None or user.role not in roles:
            raise Forbidden("Your role may not do this.")

    return _check
