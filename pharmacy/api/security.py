"""Bearer-token authentication for API blueprints, applied once per blueprint."""

from __future__ import annotations

import logging
from collections.abc import Callable

from flask import current_app, g, has_app_context, request
from redis.exceptions import RedisError
from sqlalchemy.orm import joinedload

from ..caches import on_commit_of
from ..errors import Forbidden, Unauthorised
from ..extensions import cache_failed, cache_redis, db, get_redis
from ..models import Role, User
from ..services import principals

BEARER_DOC: dict[str, list[dict[str, list[str]]]] = {"security": [{"bearerAuth": []}]}

logger = logging.getLogger(__name__)


def current_api_user() -> User:
    """The signed-in user's row, loaded on first use (the token check needs only Redis)."""
    user: User | None = g.get("api_user")
    if user is not None:
        return user
    claims: principals.TokenClaims | None = g.get("api_claims")
    if claims is None:  # pragma: no cover - the before_request hook guarantees it
        raise Unauthorised("Authentication required.")
    principal: principals.Principal | None = g.get("api_principal")
    # A patient's calls nearly always need their patient record too: one query for both.
    options = ([joinedload(User.patient)]
               if principal is not None and principal.role is Role.PATIENT else [])
    user = db.session.get(User, claims.user_id, options=options)
    if user is None or not principals.Principal.of(user).accepts(claims.generation):
        raise Unauthorised("The access token is invalid or has expired.")
    g.api_user = user
    return user


def current_principal() -> principals.Principal:
    principal: principals.Principal | None = g.get("api_principal")
    if principal is None:  # pragma: no cover - the before_request hook guarantees it
        raise Unauthorised("Authentication required.")
    return principal


def require_roles(*roles: Role) -> Callable[[], None]:
    """A ``before_request`` hook: a valid bearer token of one of ``roles`` (any if empty)."""

    def _check() -> None:
        if request.method == "OPTIONS":
            return
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorised("Send 'Authorization: Bearer <access_token>'.")
        claims = principals.checked_token(current_app.config["SECRET_KEY"], token.strip(),
                                          max_age_s=current_app.config["API_TOKEN_TTL_S"])
        principal = (principals.principal_for(db.session, cache_redis(), claims.user_id,
                                              on_redis_error=cache_failed)
                     if claims is not None else None)
        if claims is None or principal is None or not principal.accepts(claims.generation):
            raise Unauthorised("The access token is invalid or has expired.")
        if roles and principal.role not in roles:
            raise Forbidden("Your role may not use this resource.")
        g.api_claims = claims
        g.api_principal = principal

    return _check


def _publish_principal_changes(changed: dict[int, principals.Principal | None]) -> None:
    principals.forget_locally(changed)
    if has_app_context():
        try:
            principals.publish(get_redis(), changed)
        except RedisError:
            # The old copies could outlive a revocation: this is worth an operator's look.
            logger.error("could not update %d signed-in users' copies in Redis", len(changed))


on_commit_of("principals", principals.principals_changed, _publish_principal_changes)


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
        principal = g.get("api_principal")
        if principal is None or principal.role not in roles:
            raise Forbidden("Your role may not do this.")

    return _check
